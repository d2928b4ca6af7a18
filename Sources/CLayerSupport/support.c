#define _GNU_SOURCE
#include "CLayerSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

struct lc_log_target {
    lc_log_sink sink;
    void *ctx;
    int levels;
};

static void lc_log_trampoline(void *ctx, alpm_loglevel_t level, const char *fmt, va_list args) {
    struct lc_log_target *target = ctx;
    if (!(level & target->levels)) {
        return;
    }
    char *message = NULL;
    if (vasprintf(&message, fmt, args) < 0) {
        return;
    }
    target->sink(target->ctx, (int)level, message);
    free(message);
}

int lc_alpm_set_log_sink(alpm_handle_t *handle, int levels, lc_log_sink sink, void *ctx) {
    /* The target lives as long as the handle; one small allocation per handle is not worth
     * tracking, and alpm offers no hook to free it with the handle. */
    struct lc_log_target *target = malloc(sizeof *target);
    if (target == NULL) {
        return -1;
    }
    target->sink = sink;
    target->ctx = ctx;
    target->levels = levels;
    return alpm_option_set_logcb(handle, lc_log_trampoline, target);
}

int lc_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int lc_syncfs(int fd) { return syncfs(fd); }

long long lc_mount_id(const char *path) {
    struct statx st;
    if (statx(AT_FDCWD, path, 0, STATX_MNT_ID, &st) != 0) return -1;
    if (!(st.stx_mask & STATX_MNT_ID)) {
        errno = ENOSYS;
        return -1;
    }
    return (long long)st.stx_mnt_id;
}

#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif

ssize_t lc_listxattr_at(int directory_fd, const char *name, char *list, size_t size) {
    return syscall(SYS_listxattrat, directory_fd, name, AT_SYMLINK_NOFOLLOW, list, size);
}

void lc_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

unsigned long long lc_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
unsigned int lc_major(unsigned long long device) { return major(device); }
unsigned int lc_minor(unsigned long long device) { return minor(device); }

/* The parent pid of the calling process in the host's /proc (the one mounted now), or -1. */
static pid_t lc_parent_in_proc(void) {
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    char text[1024];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    text[n] = 0;
    /* "pid (comm) state ppid ...": the name may hold anything, so from its last ')'. */
    char *end = strrchr(text, ')');
    if (end == NULL) {
        return -1;
    }
    char state;
    int parent;
    return sscanf(end + 1, " %c %d", &state, &parent) == 2 ? parent : -1;
}

int lc_die_with_parent(pid_t expected_parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        return errno;
    }
    /* The parent may have died before prctl took effect. */
    pid_t parent = getppid();
    if (parent == 0) {
        parent = lc_parent_in_proc();
    }
    return parent == expected_parent ? 0 : ESRCH;
}

struct lc_namespaced_start {
    const char *path;
    char *const *argv;
    char *const *envp;
    int event_fd, event_as, stdin_fd, new_session;
    sigset_t mask;
    int err;
};

/* The child, until it execs: it shares the caller's memory (CLONE_VM, as posix_spawn does), so it
 * touches nothing but its own stack and `start`, and reports a failure in `start->err`. */
static int lc_namespaced_child(void *argument) {
    struct lc_namespaced_start *start = argument;
    /* A handler of the caller's would run on memory the caller is using. */
    for (int sig = 1; sig < _NSIG; sig++) {
        struct sigaction action;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &action) != 0) {
            continue;
        }
        if (action.sa_handler != SIG_IGN && action.sa_handler != SIG_DFL) {
            memset(&action, 0, sizeof action);
            action.sa_handler = SIG_DFL;
            sigaction(sig, &action, NULL);
        }
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        goto fail;
    }
    /* Without the terminal as its controlling terminal, nothing the work runs can open /dev/tty:
     * not read what the user types, not wait for it, and not push input into it (TIOCSTI) for the
     * user's shell to run once the build is over. */
    if (start->new_session && setsid() < 0) {
        goto fail;
    }
    if (start->stdin_fd >= 0 && dup2(start->stdin_fd, 0) < 0) {
        goto fail;
    }
    if (start->event_fd == start->event_as) {
        if (fcntl(start->event_as, F_SETFD, 0) != 0) {
            goto fail;
        }
    } else if (dup2(start->event_fd, start->event_as) < 0) {
        goto fail;
    }
    if (close_range(start->event_as + 1, ~0U, 0) != 0) {
        goto fail;
    }
    sigprocmask(SIG_SETMASK, &start->mask, NULL);
    execve(start->path, start->argv, start->envp);
fail:
    start->err = errno;
    _exit(127);
}

int lc_spawn_in_new_namespaces(const char *path, char *const argv[], char *const envp[], int event_fd, int event_as,
                               int keep_stdin, int input_fd, int isolate_network, pid_t *pid) {
    int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_VM | CLONE_VFORK | SIGCHLD;
    if (isolate_network) {
        flags |= CLONE_NEWNET;
    }
    struct lc_namespaced_start start = {
        .path = path, .argv = argv, .envp = envp, .event_fd = event_fd, .event_as = event_as, .stdin_fd = -1,
        .new_session = !keep_stdin, .err = 0};
    int opened_stdin = !keep_stdin && input_fd < 0;
    if (!keep_stdin) {
        start.stdin_fd = input_fd >= 0 ? input_fd : open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (start.stdin_fd < 0) {
            return errno;
        }
    }
    const size_t stack_size = 256 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int err = errno;
        if (opened_stdin) {
            close(start.stdin_fd);
        }
        return err;
    }
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &start.mask);
    /* CLONE_VFORK: this thread goes on once the child has exec'd or died. */
    pid_t child = clone(lc_namespaced_child, (char *)stack + stack_size, flags, &start);
    int err = child < 0 ? errno : start.err;
    pthread_sigmask(SIG_SETMASK, &start.mask, NULL);
    munmap(stack, stack_size);
    if (opened_stdin) {
        close(start.stdin_fd);
    }
    if (child > 0 && err != 0) {
        waitpid(child, NULL, 0);
    }
    if (err == 0) {
        *pid = child;
    }
    return err;
}

int lc_unshare_mount_namespace(void) { return unshare(CLONE_NEWNS) == 0 ? 0 : errno; }

int lc_unshare_cgroup_namespace(void) { return unshare(CLONE_NEWCGROUP) == 0 ? 0 : errno; }

static volatile sig_atomic_t lc_file_size_reached;
static struct rlimit lc_file_size_before;
static struct sigaction lc_file_size_handler_before;
static sigset_t lc_file_size_mask_before;

static void lc_note_file_size(int signal) {
    (void)signal;
    lc_file_size_reached = 1;
}

int lc_limit_file_size(unsigned long long bytes) {
    if (getrlimit(RLIMIT_FSIZE, &lc_file_size_before) != 0) return errno;
    struct sigaction note = {.sa_handler = lc_note_file_size};
    sigemptyset(&note.sa_mask);
    if (sigaction(SIGXFSZ, &note, &lc_file_size_handler_before) != 0) return errno;
    // SIGXFSZ goes to the thread that wrote, this one: a mask inherited from whoever started
    // layerctl would hold it pending, unseen.
    sigset_t xfsz;
    sigemptyset(&xfsz);
    sigaddset(&xfsz, SIGXFSZ);
    pthread_sigmask(SIG_UNBLOCK, &xfsz, &lc_file_size_mask_before);
    lc_file_size_reached = 0;
    struct rlimit limited = lc_file_size_before;
    if (limited.rlim_cur == RLIM_INFINITY || limited.rlim_cur > bytes) limited.rlim_cur = bytes;
    if (setrlimit(RLIMIT_FSIZE, &limited) != 0) {
        int error = errno;
        pthread_sigmask(SIG_SETMASK, &lc_file_size_mask_before, NULL);
        sigaction(SIGXFSZ, &lc_file_size_handler_before, NULL);
        return error;
    }
    return 0;
}

int lc_end_file_size_limit(void) {
    setrlimit(RLIMIT_FSIZE, &lc_file_size_before);
    pthread_sigmask(SIG_SETMASK, &lc_file_size_mask_before, NULL);
    sigaction(SIGXFSZ, &lc_file_size_handler_before, NULL);
    return lc_file_size_reached;
}

int lc_bring_up_loopback(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return errno;
    }
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    int err = 0;
    if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
        err = errno;
    } else {
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) {
            err = errno;
        }
    }
    close(fd);
    return err;
}

int lc_pivot_root(const char *new_root) {
    /* The old root is stacked on the new one by pivot_root(".", "."), then detached from it: no
       directory has to be made in the layer for it. */
    if (chdir(new_root) != 0 || syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0 ||
        chdir("/") != 0) {
        return errno;
    }
    return 0;
}

int lc_limit_privileges(const int *keep, int count) {
    unsigned long long kept = 0;
    for (int i = 0; i < count; i++) {
        if (keep[i] >= 0 && keep[i] < 64) {
            kept |= 1ULL << keep[i];
        }
    }
    /* Up to the kernel's last capability: it refuses a number it does not know with EINVAL. */
    for (int cap = 0; cap < 64; cap++) {
        if (kept & (1ULL << cap)) {
            continue;
        }
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) {
                break;
            }
            return errno;
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        return errno;
    }
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) {
        return errno;
    }
    for (int word = 0; word < 2; word++) {
        unsigned int mask = (unsigned int)(kept >> (32 * word));
        data[word].effective &= mask;
        data[word].permitted &= mask;
        data[word].inheritable = 0;
    }
    if (syscall(SYS_capset, &header, data) != 0) {
        return errno;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        return errno;
    }
    /* No core dumps, hard limit too (raising it takes CAP_SYS_RESOURCE, which is gone): a crash
     * leaves no core file in the layer, and wakes no core handler of the host's (a core_pattern
     * of "|systemd-coredump" runs on the host, as root). */
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) {
        return errno;
    }
    return 0;
}

/* The ruleset's attributes as of Landlock ABI 6; Debian 12's kernel headers end before `scoped`. */
struct lc_landlock_ruleset_attr {
    unsigned long long handled_access_fs;
    unsigned long long handled_access_net;
    unsigned long long scoped;
};
#define LC_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define LC_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define LC_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_restrict_self 446
#endif

int lc_landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LC_LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : (int)abi;
}

int lc_scope_landlock(void) {
    if (lc_landlock_abi() < 6) {
        return EOPNOTSUPP;
    }
    struct lc_landlock_ruleset_attr attr = {
        .scoped = LC_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LC_LANDLOCK_SCOPE_SIGNAL,
    };
    long ruleset = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    if (ruleset < 0) {
        return errno;
    }
    int rc = syscall(SYS_landlock_restrict_self, (int)ruleset, 0) == 0 ? 0 : errno;
    close((int)ruleset);
    return rc;
}

/* Landlock's file system rights, by the ABI that brought them (landlock.h). */
#define LC_LANDLOCK_FS_EXECUTE (1ULL << 0)
#define LC_LANDLOCK_FS_WRITE_FILE (1ULL << 1)
#define LC_LANDLOCK_FS_READ_FILE (1ULL << 2)
#define LC_LANDLOCK_FS_READ_DIR (1ULL << 3)
#define LC_LANDLOCK_FS_ABI1 ((1ULL << 13) - 1) /* EXECUTE .. MAKE_SYM */
#define LC_LANDLOCK_FS_REFER (1ULL << 13)      /* ABI 2 */
#define LC_LANDLOCK_FS_TRUNCATE (1ULL << 14)   /* ABI 3 */
#define LC_LANDLOCK_FS_IOCTL_DEV (1ULL << 15)  /* ABI 5 */
#define LC_LANDLOCK_RULE_PATH_BENEATH 1
#ifndef SYS_landlock_add_rule
#define SYS_landlock_add_rule 445
#endif

struct lc_landlock_path_beneath_attr {
    unsigned long long allowed_access;
    int parent_fd;
} __attribute__((packed));

/* Allows `rights` beneath `path` (a file: only the rights a file has); a path that is not there
 * is no error, it is only not allowed. */
static int lc_landlock_allow(int ruleset, const char *path, unsigned long long rights) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT || errno == ENOTDIR ? 0 : errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return err;
    }
    if (!S_ISDIR(st.st_mode)) {
        rights &= LC_LANDLOCK_FS_EXECUTE | LC_LANDLOCK_FS_WRITE_FILE | LC_LANDLOCK_FS_READ_FILE |
                  LC_LANDLOCK_FS_TRUNCATE | LC_LANDLOCK_FS_IOCTL_DEV;
    }
    struct lc_landlock_path_beneath_attr rule = {.allowed_access = rights, .parent_fd = fd};
    int rc = syscall(SYS_landlock_add_rule, ruleset, LC_LANDLOCK_RULE_PATH_BENEATH, &rule, 0) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

int lc_landlock_confine(const char *const *readable, int readable_count, const char *const *writable,
                        int writable_count) {
    int abi = lc_landlock_abi();
    if (abi < 1) {
        return EOPNOTSUPP;
    }
    unsigned long long handled = LC_LANDLOCK_FS_ABI1;
    if (abi >= 2) handled |= LC_LANDLOCK_FS_REFER;
    if (abi >= 3) handled |= LC_LANDLOCK_FS_TRUNCATE;
    if (abi >= 5) handled |= LC_LANDLOCK_FS_IOCTL_DEV;
    struct lc_landlock_ruleset_attr attr = {.handled_access_fs = handled};
    if (abi >= 6) attr.scoped = LC_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LC_LANDLOCK_SCOPE_SIGNAL;
    /* Older kernels know a shorter attribute: give them only what they know. */
    size_t size = abi >= 6 ? sizeof(attr) : abi >= 4 ? 2 * sizeof(unsigned long long) : sizeof(unsigned long long);
    long ruleset = syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (ruleset < 0) {
        return errno;
    }
    const unsigned long long read = LC_LANDLOCK_FS_EXECUTE | LC_LANDLOCK_FS_READ_FILE | LC_LANDLOCK_FS_READ_DIR;
    int rc = 0;
    for (int i = 0; i < readable_count && rc == 0; i++) {
        rc = lc_landlock_allow((int)ruleset, readable[i], read);
    }
    for (int i = 0; i < writable_count && rc == 0; i++) {
        rc = lc_landlock_allow((int)ruleset, writable[i], handled);
    }
    if (rc == 0) {
        rc = syscall(SYS_landlock_restrict_self, (int)ruleset, 0) == 0 ? 0 : errno;
    }
    close((int)ruleset);
    return rc;
}

int lc_refuse_system_calls(const char *const *names, int count, int refusal, const char **failed_name) {
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
    if (filter == NULL) {
        return ENOMEM;
    }
    int rc = 0;
#if defined(__x86_64__)
    if ((rc = seccomp_arch_add(filter, SCMP_ARCH_X86)) != 0 || (rc = seccomp_arch_add(filter, SCMP_ARCH_X32)) != 0) {
        goto done;
    }
#elif defined(__aarch64__)
    if ((rc = seccomp_arch_add(filter, SCMP_ARCH_ARM)) != 0) {
        goto done;
    }
#endif
    for (int i = 0; i < count; i++) {
        int number = seccomp_syscall_resolve_name(names[i]);
        if (number == __NR_SCMP_ERROR) {
            continue;
        }
        if ((rc = seccomp_rule_add(filter, SCMP_ACT_ERRNO(refusal), number, 0)) != 0) {
            if (failed_name != NULL) {
                *failed_name = names[i];
            }
            goto done;
        }
    }
    static const unsigned long namespaces[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,   CLONE_NEWUSER,
                                               CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP};
    for (size_t i = 0; i < sizeof namespaces / sizeof namespaces[0]; i++) {
        rc = seccomp_rule_add(filter, SCMP_ACT_ERRNO(refusal), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, namespaces[i], namespaces[i]));
        if (rc != 0) {
            if (failed_name != NULL) {
                *failed_name = "clone";
            }
            goto done;
        }
    }
    if ((rc = seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)) != 0) {
        if (failed_name != NULL) {
            *failed_name = "clone3";
        }
        goto done;
    }
    rc = seccomp_load(filter);
done:
    seccomp_release(filter);
    return rc < 0 ? -rc : rc;
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

const int lc_o_noatime = O_NOATIME;

off_t lc_seek_extent(int fd, off_t offset, int hole) {
    return lseek(fd, offset, hole ? SEEK_HOLE : SEEK_DATA);
}

int lc_spawn_actions_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
