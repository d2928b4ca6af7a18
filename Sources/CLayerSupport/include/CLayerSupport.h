#ifndef CLAYERSUPPORT_H
#define CLAYERSUPPORT_H

#include <sys/types.h>
#include <sys/xattr.h>
#include <alpm.h>

/// Receives one formatted libalpm log line.
typedef void (*lc_log_sink)(void *ctx, int level, const char *message);

/// Installs a log callback on `handle` that formats libalpm's printf-style message and hands the
/// text to `sink`. Exists because alpm_cb_log takes a `va_list`, which Swift cannot forward.
int lc_alpm_set_log_sink(alpm_handle_t *handle, lc_log_sink sink, void *ctx);

/// Starts `path` with `argv`/`envp` in a child that first chroots into `root` and changes to "/".
/// stdin is `in_fd`, stdout `out_fd`, stderr `err_fd`. Returns 0 and the pid, or an errno value.
/// Exists because posix_spawn cannot chroot, and Swift must not run code between fork and exec.
int lc_spawn_chrooted(const char *root, const char *path, char *const argv[], char *const envp[],
                      int in_fd, int out_fd, int err_fd, pid_t *pid);

/// Makes the calling process receive SIGKILL when its parent dies, and reports whether the parent
/// is already gone. Exists so a builder never outlives the layerctl that started it.
int lc_die_with_parent(pid_t expected_parent);

/// Moves the calling process into new mount, pid, uts and ipc namespaces (and a new network
/// namespace when `isolate_network`). Children it starts afterwards are in the new pid namespace.
/// Exists because the CLONE_NEW* flags need _GNU_SOURCE, which Swift's Glibc module does not set.
int lc_unshare_build_namespaces(int isolate_network);

/// Opens `path` as if `root_fd` were "/": absolute symlinks and ".." cannot climb out of it
/// (openat2 with RESOLVE_IN_ROOT). Returns the fd, or -1 with errno set. Exists because a layer's
/// own absolute symlinks must never lead a write onto the host, and glibc has no openat2 wrapper.
int lc_open_in_root(int root_fd, const char *path, int flags, mode_t mode);

#endif
