// The starter: a copy of layerctl made first thing in `main`, before the process has a second
// thread, that starts namespaced work (NamespacedWork) for it by cloning itself, where the exec'd
// way starts layerctl's executable again.
//
// Why. An exec of layerctl costs about 12 ms of CPU before its first line of Swift runs: the
// dynamic linker maps 54 objects and relocates them (137,000 relocations), and each page it
// writes is a fault. A build starts three such processes or more (the downloads, the
// resolutions, one builder per layer), more than a third of the CPU by which a cold base layer
// cost more than pacman. A clone of a process that has all of that done costs a fraction of a
// millisecond. Cloning layerctl's own process instead would copy whatever its other threads
// held at that moment (a lock of malloc, of the Swift runtime, of Foundation), for the clone to
// wait on forever; the starter has one thread, this loop's, and takes no lock.
//
// What the work gets is what the exec'd way gives it, as the requester has it when it asks: the
// environment, umask, resource limits, signal mask and ignored signals (build --check varies the
// first three), stdin, stdout and stderr, and the event descriptor as descriptor 3, nothing else
// open. It is the requester's child (CLONE_PARENT), so the requester waits for it, gets its
// status and CPU time, and the work dies with it (PR_SET_PDEATHSIG). Its command line is wiped:
// the work's processes read /proc/1/cmdline, and the requester's names its paths.
//
// The clone is the raw system call (glibc has no fork that takes namespace flags): glibc's own
// record of the thread's id stays the starter's, which only error-checking and robust mutexes
// read, and raise() and abort() ask the kernel. The starter ends when the requester closes its
// socket, or dies; it holds no other descriptor. Where it fails or is gone, the requester execs.
#define _GNU_SOURCE
#include "CLayerSupport.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// A request's fixed part; `text_length` bytes follow: the request's text, a NUL, then the
// environment's strings, each ending in a NUL.
struct starter_request {
    uint64_t clone_flags;
    int32_t new_session;
    uint32_t mask;
    struct rlimit limits[RLIM_NLIMITS];
    sigset_t signal_mask;
    uint64_t ignored;  // bit n - 1: signal n is ignored
    uint64_t text_length;
};

struct starter_answer {
    int32_t error;
    int32_t pid;
};

// The most a request may carry: the requester's environment, which exec would take up to its
// own limit (a quarter of the stack); past this, the requester execs.
#define STARTER_LONGEST_TEXT (1u << 20)

// The requester's threads take turns: a request and its answer are one exchange on the socket.
static pthread_mutex_t starter_turn = PTHREAD_MUTEX_INITIALIZER;
static int starter_socket = -1;
static pid_t starter_pid;
static pid_t starter_owner;

static int write_all(int fd, const void *bytes, size_t length) {
    const char *at = bytes;
    while (length > 0) {
        ssize_t written = send(fd, at, length, MSG_NOSIGNAL);
        if (written < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        at += written;
        length -= (size_t)written;
    }
    return 0;
}

static int read_all(int fd, void *bytes, size_t length) {
    char *at = bytes;
    while (length > 0) {
        ssize_t got = read(fd, at, length);
        if (got < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (got == 0) return EPIPE;
        at += got;
        length -= (size_t)got;
    }
    return 0;
}

// The starter's end of a request: its fixed part with the four descriptors, then its text.
// Returns 0, EPIPE once the requester is gone, or another errno.
static int receive_request(int socket, struct starter_request *request, int fds[4], char **text) {
    union {
        char buffer[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec vector = {.iov_base = request, .iov_len = sizeof *request};
    struct msghdr message = {
        .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    ssize_t got;
    do {
        got = recvmsg(socket, &message, MSG_WAITALL | MSG_CMSG_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    if (got == 0) return EPIPE;
    if (got < 0) return errno;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    int received = header != NULL && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS &&
                   header->cmsg_len == CMSG_LEN(4 * sizeof(int));
    if (received) memcpy(fds, CMSG_DATA(header), 4 * sizeof(int));
    if ((size_t)got != sizeof *request || !received || (message.msg_flags & MSG_CTRUNC) != 0 ||
        request->text_length == 0 || request->text_length > STARTER_LONGEST_TEXT) {
        if (received)
            for (int i = 0; i < 4; i++) close(fds[i]);
        return EPROTO;
    }
    *text = malloc(request->text_length);
    int error = *text == NULL ? ENOMEM : read_all(socket, *text, request->text_length);
    if (error == 0 && (*text)[request->text_length - 1] != '\0') error = EPROTO;
    if (error != 0) {
        free(*text);
        for (int i = 0; i < 4; i++) close(fds[i]);
    }
    return error;
}

// In the new process: becomes what the request asks for. Returns 0 or an errno.
static int settle(const struct starter_request *request, const int fds[4], char *text) {
    for (int sig = 1; sig < _NSIG && sig <= 64; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = (request->ignored >> (sig - 1)) & 1 ? SIG_IGN : SIG_DFL;
        sigaction(sig, &action, NULL);
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return errno;
    if (request->new_session && setsid() < 0) return errno;
    // The descriptors came in at the lowest free numbers, among 0 to 3: each is moved above them
    // first, so that placing one does not close another.
    int moved[4];
    for (int i = 0; i < 4; i++) {
        moved[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 4);
        if (moved[i] < 0) return errno;
    }
    for (int i = 0; i < 4; i++) {
        if (dup2(moved[i], i) < 0) return errno;
    }
    if (close_range(4, ~0U, 0) != 0) return errno;
    umask(request->mask);
    for (int resource = 0; resource < RLIM_NLIMITS; resource++) {
        // As exec would leave them: a limit the requester has, this process has (the starter's
        // were the requester's at its start, and may be higher or lower now).
        setrlimit(resource, &request->limits[resource]);
    }
    size_t count = 0;
    char *end = text + request->text_length;
    for (char *at = text + strlen(text) + 1; at < end; at += strlen(at) + 1) count++;
    char **environment = calloc(count + 1, sizeof(char *));
    if (environment == NULL) return ENOMEM;
    size_t index = 0;
    for (char *at = text + strlen(text) + 1; at < end; at += strlen(at) + 1) environment[index++] = at;
    environ = environment;
    sigprocmask(SIG_SETMASK, &request->signal_mask, NULL);
    return 0;
}

// The starter's loop: one new process a request, until the requester is gone. Returns only in
// a new process, with its request's text; the starter itself ends here.
static char *serve(int socket) {
    for (;;) {
        struct starter_request request;
        int fds[4];
        char *text = NULL;
        // A request cut short or malformed leaves the stream without a known next message: the
        // starter ends, and the requester execs from then on.
        if (receive_request(socket, &request, fds, &text) != 0) _exit(0);
        struct starter_answer answer = {.error = 0, .pid = 0};
        {
            // A clone as fork makes it (no stack of its own: this one, copied), with the flags the
            // request asks for, as the requester's child.
            long pid = syscall(SYS_clone, (unsigned long)(request.clone_flags | CLONE_PARENT | SIGCHLD), NULL, NULL,
                               NULL, 0);
            if (pid == 0) {
                close(socket);
                starter_socket = -1;
                starter_owner = 0;
                int settled = settle(&request, fds, text);
                if (settled != 0) {
                    // The requester learns it from the exit status: its answer is sent already.
                    _exit(127);
                }
                return text;
            }
            if (pid < 0) answer.error = errno;
            answer.pid = (int32_t)pid;
            for (int i = 0; i < 4; i++) close(fds[i]);
            free(text);
        }
        if (write_all(socket, &answer, sizeof answer) != 0) _exit(0);
    }
}

static void end_starter_locked(void) {
    if (starter_socket < 0) return;
    close(starter_socket);
    starter_socket = -1;
    int status;
    while (waitpid(starter_pid, &status, 0) < 0 && errno == EINTR) {
    }
}

static void end_starter(void) {
    if (getpid() == starter_owner) lc_starter_end();
}

// Whether this process has one thread: a fork of it then holds no lock another thread took.
static int single_threaded(void) {
    DIR *tasks = opendir("/proc/self/task");
    if (tasks == NULL) return 0;
    int count = 0;
    for (struct dirent *entry; (entry = readdir(tasks)) != NULL;) {
        if (entry->d_name[0] != '.') count++;
    }
    closedir(tasks);
    return count == 1;
}

int lc_starter_begin(int argc, char **argv, char **request_text) {
    if (!single_threaded()) return -EAGAIN;
    int sockets[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) return -errno;
    pid_t requester = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int error = errno;
        close(sockets[0]);
        close(sockets[1]);
        return -error;
    }
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != requester) _exit(0);
        int socket = sockets[1];
        // Nothing of the requester's stays open here but the socket: the caller's pipes reach
        // their end when the requester closes them.
        // (dup3 of a descriptor onto itself fails: where the socket is 3 already, it stays.)
        if (socket != 3 && dup3(socket, 3, O_CLOEXEC) < 0) _exit(0);
        socket = 3;
        if (close_range(0, 2, 0) != 0 || close_range(4, ~0U, 0) != 0) _exit(0);
        // A Ctrl-C reaches the requester, which stops its work; the starter goes when the
        // requester closes the socket or dies. What the work gets is set from the request.
        const int left[] = {SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGPIPE};
        for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) signal(left[i], SIG_IGN);
        if (argc > 0) {
            char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
            memset(start, 0, (size_t)(end - start));
            strncpy(start, "layerctl", (size_t)(end - start));
        }
        *request_text = serve(socket);
        return 1;
    }
    close(sockets[1]);
    starter_socket = sockets[0];
    starter_pid = pid;
    starter_owner = requester;
    atexit(end_starter);
    return 0;
}

// The process's umask, read from /proc/self/status: umask() would set it to read it, and a file
// another thread makes at that moment would get the wrong mode.
static mode_t current_umask(void) {
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char status[4096];
        ssize_t got = read(fd, status, sizeof status - 1);
        close(fd);
        if (got > 0) {
            status[got] = '\0';
            char *line = strstr(status, "\nUmask:\t");
            if (line != NULL) return (mode_t)strtoul(line + 8, NULL, 8);
        }
    }
    mode_t mask = umask(022);
    umask(mask);
    return mask;
}

int lc_starter_available(void) { return starter_socket >= 0 && getpid() == starter_owner; }

int lc_starter_start(const char *request_text, char *const envp[], int stdin_fd, int event_fd, int keep_stdin,
                     int isolate_network, pid_t *pid) {
    if (!lc_starter_available()) return ENOSYS;
    uint64_t flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC;
    if (isolate_network) flags |= CLONE_NEWNET;
    struct starter_request request = {.clone_flags = flags, .new_session = !keep_stdin};
    request.mask = current_umask();
    for (int resource = 0; resource < RLIM_NLIMITS; resource++) {
        if (getrlimit(resource, &request.limits[resource]) != 0) return errno;
    }
    pthread_sigmask(SIG_SETMASK, NULL, &request.signal_mask);
    for (int sig = 1; sig < _NSIG && sig <= 64; sig++) {
        struct sigaction action;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &action) == 0 && action.sa_handler == SIG_IGN)
            request.ignored |= 1ull << (sig - 1);
    }
    size_t length = strlen(request_text) + 1;
    for (char *const *entry = envp; *entry != NULL; entry++) length += strlen(*entry) + 1;
    if (length > STARTER_LONGEST_TEXT) return E2BIG;
    char *text = malloc(length);
    if (text == NULL) return ENOMEM;
    size_t at = strlen(request_text) + 1;
    memcpy(text, request_text, at);
    for (char *const *entry = envp; *entry != NULL; entry++) {
        size_t size = strlen(*entry) + 1;
        memcpy(text + at, *entry, size);
        at += size;
    }
    request.text_length = length;
    int opened_stdin = -1;
    if (!keep_stdin && stdin_fd < 0) {
        opened_stdin = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (opened_stdin < 0) {
            int error = errno;
            free(text);
            return error;
        }
        stdin_fd = opened_stdin;
    }
    int fds[4] = {keep_stdin ? 0 : stdin_fd, 1, 2, event_fd};
    union {
        char buffer[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec vector = {.iov_base = &request, .iov_len = sizeof request};
    struct msghdr message = {
        .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.buffer, .msg_controllen = sizeof control.buffer};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(header), fds, sizeof fds);
    pthread_mutex_lock(&starter_turn);
    int error = starter_socket < 0 ? ENOSYS : 0;
    if (error == 0) {
        ssize_t sent;
        do {
            sent = sendmsg(starter_socket, &message, MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        error = sent < 0 ? errno : sent != (ssize_t)sizeof request ? EPROTO : 0;
    }
    if (error == 0) error = write_all(starter_socket, text, length);
    struct starter_answer answer;
    if (error == 0) error = read_all(starter_socket, &answer, sizeof answer);
    // Where the starter is gone or a message was cut, the exec'd way from now on.
    if (error != 0) end_starter_locked();
    pthread_mutex_unlock(&starter_turn);
    if (opened_stdin >= 0) close(opened_stdin);
    free(text);
    if (error != 0) return error;
    if (answer.error != 0) return answer.error;
    *pid = answer.pid;
    return 0;
}

void lc_starter_end(void) {
    pthread_mutex_lock(&starter_turn);
    end_starter_locked();
    pthread_mutex_unlock(&starter_turn);
}
