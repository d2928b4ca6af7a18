#define _GNU_SOURCE
#include "CLayerSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

struct lc_log_target {
    lc_log_sink sink;
    void *ctx;
};

static void lc_log_trampoline(void *ctx, alpm_loglevel_t level, const char *fmt, va_list args) {
    struct lc_log_target *target = ctx;
    char *message = NULL;
    if (vasprintf(&message, fmt, args) < 0) {
        return;
    }
    target->sink(target->ctx, (int)level, message);
    free(message);
}

int lc_alpm_set_log_sink(alpm_handle_t *handle, lc_log_sink sink, void *ctx) {
    /* The target lives as long as the handle; one small allocation per handle is not worth
     * tracking, and alpm offers no hook to free it with the handle. */
    struct lc_log_target *target = malloc(sizeof *target);
    if (target == NULL) {
        return -1;
    }
    target->sink = sink;
    target->ctx = ctx;
    return alpm_option_set_logcb(handle, lc_log_trampoline, target);
}

int lc_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

unsigned long long lc_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
unsigned int lc_major(unsigned long long device) { return major(device); }
unsigned int lc_minor(unsigned long long device) { return minor(device); }

int lc_spawn_chrooted(const char *root, const char *path, char *const argv[], char *const envp[],
                      int in_fd, int out_fd, int err_fd, pid_t *pid) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        return errno;
    }
    pid_t child = fork();
    if (child < 0) {
        int err = errno;
        close(report[0]);
        close(report[1]);
        return err;
    }
    if (child == 0) {
        /* Only async-signal-safe calls from here to execve. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0 || chroot(root) != 0 ||
            chdir("/") != 0) {
            int err = errno;
            (void)!write(report[1], &err, sizeof err);
            _exit(127);
        }
        /* The command gets stdin, stdout and stderr, and none of the builder's other files,
           however high their numbers: all of them close at exec (the report pipe too, which must
           stay open until then). Kernels before 5.11 lack the flag: close them one by one. */
        if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            long last = sysconf(_SC_OPEN_MAX);
            for (int fd = 3; fd < (last > 0 ? last : 1024); fd++) {
                if (fd != report[1]) {
                    close(fd);
                }
            }
        }
        execve(path, argv, envp);
        int err = errno;
        (void)!write(report[1], &err, sizeof err);
        _exit(127);
    }
    close(report[1]);
    int err = 0;
    ssize_t n;
    do {
        n = read(report[0], &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == sizeof err) {
        /* The child failed before exec; reap it so it does not linger as a zombie. */
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        return err;
    }
    *pid = child;
    return 0;
}

int lc_die_with_parent(pid_t expected_parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        return errno;
    }
    /* The parent may have died before prctl took effect. */
    if (getppid() != expected_parent) {
        return ESRCH;
    }
    return 0;
}

int lc_unshare_build_namespaces(int isolate_network) {
    int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC;
    if (isolate_network) {
        flags |= CLONE_NEWNET;
    }
    return unshare(flags) == 0 ? 0 : errno;
}

int lc_open_in_root(int root_fd, const char *path, int flags, mode_t mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    /* NO_XDEV: a symlink in the layer cannot lead into /proc, /sys, /dev or any other mount. */
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
    return (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
}

off_t lc_seek_extent(int fd, off_t offset, int hole) {
    return lseek(fd, offset, hole ? SEEK_HOLE : SEEK_DATA);
}

int lc_spawn_actions_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
