#ifndef CLAYERSUPPORT_H
#define CLAYERSUPPORT_H

#include <spawn.h>
#include <linux/capability.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <alpm.h>
#include <sqfs/predef.h>
#include <sqfs/compressor.h>
#include <sqfs/inode.h>
#include <sqfs/dir.h>
#include <sqfs/xattr.h>

/// Receives one formatted libalpm log line.
typedef void (*lc_log_sink)(void *ctx, int level, const char *message);

/// Installs a log callback on `handle` that formats libalpm's printf-style message and hands the
/// text to `sink`, for the levels in `levels` (a mask of alpm_loglevel_t) only: libalpm calls its
/// log callback for every level, a debug line for each file it extracts, and leaves the filtering
/// to the callback. Exists because alpm_cb_log takes a `va_list`, which Swift cannot forward.
int lc_alpm_set_log_sink(alpm_handle_t *handle, int levels, lc_log_sink sink, void *ctx);

/// Makes the calling process receive SIGKILL when its parent dies, and reports whether the parent
/// is already gone: whether the parent the host's /proc names is still `expected_parent` (pid 1
/// of a new pid namespace sees its parent as 0). Exists so a builder never outlives the layerctl
/// that started it.
int lc_die_with_parent(pid_t expected_parent);

/// Starts `path` as pid 1 of new mount, pid, uts and ipc namespaces (and a new network namespace
/// when `isolate_network`), as posix_spawn would start it, safe from a multi-threaded process:
/// stdin from `input_fd` (the caller keeps it), or from /dev/null when that is -1, and a session
/// of its own (no controlling terminal) unless `keep_stdin`, `event_fd` handed over as descriptor `event_as`, every descriptor above that closed, signal
/// handlers back to their defaults, and SIGKILL on the caller's death set before the program
/// starts. Stores the child's pid in `pid`; returns 0, or
/// the errno of what failed (the clone, or the exec). Exists because posix_spawn cannot make
/// namespaces, and one process started this way costs one exec where unshare and a second start
/// cost two.
int lc_spawn_in_new_namespaces(const char *path, char *const argv[], char *const envp[], int event_fd, int event_as,
                               int keep_stdin, int input_fd, int isolate_network, pid_t *pid);

/// Forks the starter (work_starter.c), which starts namespaced work by cloning itself, when this
/// process has one thread. Returns 0 here, a negative errno where it made none, and 1 in a process
/// the starter started, with the text of its request in `request_text`.
int lc_starter_begin(int argc, char **argv, char **request_text);

/// Whether this process has a starter to ask.
int lc_starter_available(void);

/// Asks the starter for a process in new mount, pid, uts and ipc namespaces (and network, where
/// `isolate_network`) doing `request_text`, with the environment `envp`, this process's umask,
/// limits and signal mask, `event_fd` as descriptor 3 and as stdin `stdin_fd`, this process's
/// own stdin where `keep_stdin`, or /dev/null. The process is this one's child. Returns 0 with
/// its pid, or an errno; once the starter is gone, every call fails (ENOSYS).
int lc_starter_start(const char *request_text, char *const envp[], int stdin_fd, int event_fd, int keep_stdin,
                     int isolate_network, pid_t *pid);

/// Closes the starter's socket and waits for it to end. layerctl's exit does it too.
void lc_starter_end(void);

/// Moves the calling process into a new mount namespace. Exists because CLONE_NEWNS needs
/// _GNU_SOURCE, which Swift's Glibc module does not set.
int lc_unshare_mount_namespace(void);

/// Moves the calling process into a new cgroup namespace, whose root is the cgroup it is in now
/// (CLONE_NEWCGROUP needs _GNU_SOURCE too).
int lc_unshare_cgroup_namespace(void);

/// Holds every file the process writes to at most `bytes` (RLIMIT_FSIZE), and counts the writes
/// that reach past it (SIGXFSZ, caught: the write fails with EFBIG instead of ending the process).
/// Returns 0 or an errno. In C, so that the limit, the handler and the signal mask are set and
/// put back together.
int lc_limit_file_size(unsigned long long bytes);

/// Lifts what lc_limit_file_size set, back to what was before, and says whether a write reached
/// past the limit meanwhile.
int lc_end_file_size_limit(void);

/// Sets, for the calling thread alone, the slowest a download of libalpm's may come before curl
/// ends it (download_floor.c): at least `bytes_per_second`, sustained for `seconds`. 0, 0 lifts it.
void lc_set_download_floor(long bytes_per_second, long seconds);

/// Brings up the loopback interface of the calling process's network namespace (a new one starts
/// with it down). Returns 0 or an errno value.
int lc_bring_up_loopback(void);

/// Makes `new_root`, a mount point, the root of the calling process's mount namespace, and
/// detaches the old root entirely (pivot_root, then a lazy unmount of what was "/"): no path
/// leads back to it. The working directory becomes "/". Returns 0 or an errno value. Exists
/// because glibc has no pivot_root wrapper.
int lc_pivot_root(const char *new_root);

/// Keeps only the capabilities in `keep` (`count` of them, by number): every other one leaves the
/// bounding set, so no program run later can gain it, and the permitted, effective and
/// inheritable sets, and the ambient set is cleared. Then sets no_new_privs, and makes the process
/// not dumpable, so its /proc entries (root, environ, fd) are closed to its children, and sets its
/// core dump limit, hard and soft, to 0. Returns 0 or an errno value.
int lc_limit_privileges(const int *keep, int count);

/// Puts the calling process, and everything it starts from then on, in a Landlock domain that
/// reaches no abstract unix socket made outside it, and signals no process outside it (Landlock's
/// scopes, Linux 6.12, ABI 6). Access to files and the network is not touched. Needs no_new_privs.
/// Returns 0, EOPNOTSUPP where the kernel has no such scopes (or Landlock is off), or an errno
/// value.
int lc_scope_landlock(void);

/// The Landlock ABI version the kernel offers; 0 where it has none, or Landlock is off.
int lc_landlock_abi(void);

/// Puts the calling process, and everything it starts from then on, in a Landlock domain that
/// reads and runs files only beneath the `readable` paths and the `writable` ones, and changes
/// files only beneath the `writable` ones; it reaches no abstract unix socket made outside it and
/// signals no process outside it (where the kernel has scopes). A path that is a file gets the
/// rights a file can have; a path that is not there is left out. The network is not touched.
/// Needs no_new_privs. Returns 0, EOPNOTSUPP where the kernel has no Landlock, or an errno value.
int lc_landlock_confine(const char *const *readable, int readable_count, const char *const *writable,
                        int writable_count);

/// Installs a seccomp filter (libseccomp) on the calling thread, inherited by everything it
/// starts: each system call in `names` fails with `refusal` (an errno value), for every ABI the
/// architecture runs (on x86-64 also i386 and x32, whose numbers differ), as does clone with a
/// CLONE_NEW* flag; clone3, whose flags a filter cannot read, fails with ENOSYS, so that the C
/// library falls back to clone. Names this architecture does not know are skipped. Returns 0 or an
/// errno value; on failure `*failed_name`, when not NULL, names the call that could not be added.
int lc_refuse_system_calls(const char *const *names, int count, int refusal, const char **failed_name);

/// From now on in this process, each file libalpm extracts gets its mtime clamped to `epoch`
/// (whole seconds), as the normaliser would set it after the build (package_extraction.c).
void lc_clamp_extracted_times(int64_t epoch);

/// From now on in this process, libarchive's symlink check of a file libalpm extracts is made in
/// two system calls where its path is plain and has no symlink on it, and by libarchive's walk of
/// the path otherwise (package_extraction.c).
void lc_check_extracted_paths_quickly(void);

/// UTIME_OMIT for utimensat: leave that time as it is (the macro does not reach Swift).
static const long lc_utime_omit = UTIME_OMIT;

/// glibc's makedev, major and minor, which are macros Swift cannot see. Tests hold the squashfs
/// device encoding against them.
unsigned long long lc_makedev(unsigned int major, unsigned int minor);
unsigned int lc_major(unsigned long long device);
unsigned int lc_minor(unsigned long long device);

/// A pipe whose both ends close on exec, made at once (pipe2 with O_CLOEXEC): a process another
/// thread starts in between can inherit neither. Returns 0, or -1 with errno set. Exists because
/// pipe2 needs _GNU_SOURCE, which Swift's Glibc module does not set.
int lc_pipe_cloexec(int fds[2]);

/// syncfs(2): writes out everything of the filesystem that holds `fd`. Needs _GNU_SOURCE.
int lc_syncfs(int fd);

/// The id of the mount that holds `path` (following symlinks), as the first field of
/// /proc/self/mountinfo gives it, from statx (Linux 5.8); -1 with errno set (ENOSYS on an older
/// kernel). Needs _GNU_SOURCE.
long long lc_mount_id(const char *path);

/// listxattrat(2) (Linux 6.13) without following a final symlink: the attribute names of `name`
/// in the folder `directory_fd`, as llistxattr gives them for a path, without the kernel walking
/// the whole path again. Returns the size, or -1 with errno set; ENOSYS on an older kernel, after
/// which the caller lists by path. glibc has no wrapper.
ssize_t lc_listxattr_at(int directory_fd, const char *name, char *list, size_t size);

/// Makes stdout line-buffered, into a pipe or a file too. Exists because Swift 6 refuses to name
/// C's `stdout`, a mutable global.
void lc_line_buffer_stdout(void);

/// Adds "close every descriptor from `lowest` up" to posix_spawn's file actions
/// (posix_spawn_file_actions_addclosefrom_np, glibc 2.34), so a child inherits no descriptor the
/// caller of layerctl left open without close-on-exec. Needs _GNU_SOURCE, hence here.
int lc_spawn_actions_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Opens `path` as if `root_fd` were "/": absolute symlinks and ".." cannot climb out of it
/// (openat2 with RESOLVE_IN_ROOT). Returns the fd, or -1 with errno set. Exists because a layer's
/// own absolute symlinks must never lead a write onto the host, and glibc has no openat2 wrapper.
/// Nor can a path cross into another mount (RESOLVE_NO_XDEV): /proc, /sys and /dev in the build
/// root are the kernel's.
int lc_open_in_root(int root_fd, const char *path, int flags, mode_t mode);

/// A libsquashfs file over an open, empty file descriptor, which stays the caller's to close: the
/// one writer of an image, for libsquashfs's tables and the writer's data blocks alike. Exists
/// because libsquashfs opens files only by path, and because the writer also copies block-cache
/// ranges in (`lc_sqfs_fd_file_copy_in`) and starts early writeback through it.
sqfs_file_t *lc_sqfs_fd_file(int fd);

/// Copies `length` bytes at `in_offset` of `in_fd` into the file at `at` (as lc_copy_range) and
/// grows the file to match: 0, or -1 with errno set.
int lc_sqfs_fd_file_copy_in(sqfs_file_t *file, int in_fd, sqfs_u64 in_offset, sqfs_u64 at, size_t length);

/// The errno of the file's last read, write or truncate that failed (SQFS_ERROR_IO says no more),
/// or 0.
int lc_sqfs_fd_file_error(const sqfs_file_t *file);

/// Starts writing `length` bytes from `offset` of the file to disk (lc_start_writeback).
void lc_sqfs_fd_file_start_writeback(sqfs_file_t *file, sqfs_u64 offset, sqfs_u64 length);

/// Copies `length` bytes between two files inside the kernel (copy_file_range), or through a
/// buffer where the kernel cannot (files on two file systems, an output opened with O_APPEND,
/// which then takes the bytes at its end whatever `out_offset` says); the whole length or fail: 0,
/// or -1 with errno set. Exists because glibc declares copy_file_range only under _GNU_SOURCE, which
/// Swift's Glibc module does not set.
int lc_copy_range(int in_fd, sqfs_u64 in_offset, int out_fd, sqfs_u64 out_offset, size_t length);

/// The next offset at or after `offset` where data starts (`hole` 0: SEEK_DATA) or a hole starts
/// (`hole` 1: SEEK_HOLE); -1 with errno set (ENXIO: no more data). Exists because SEEK_DATA and
/// SEEK_HOLE are defined only under _GNU_SOURCE, which Swift's Glibc module does not set.
off_t lc_seek_extent(int fd, off_t offset, int hole);

/// open(2)'s O_NOATIME, which glibc defines only under _GNU_SOURCE, as above.
extern const int lc_o_noatime;

/// Starts writing a range of a file to disk without waiting (sync_file_range with
/// SYNC_FILE_RANGE_WRITE), so that a later fsync finds most of it written. Same reason.
void lc_start_writeback(int fd, sqfs_u64 offset, sqfs_u64 length);

/// A regular file's inode: data blocks from `blocks_start` with on-disk `sizes` (`count` of
/// them), and its tail at `fragment_offset` in fragment block `fragment_index` (0xFFFFFFFF for
/// none). Extended when a field needs it. Free with free(3). Exists because libsquashfs makes file
/// inodes only inside its block processor, and layerctl lays out file data itself.
sqfs_inode_generic_t *lc_sqfs_file_inode(sqfs_u64 blocks_start, sqfs_u64 file_size, sqfs_u64 sparse,
                                         sqfs_u32 fragment_index, sqfs_u32 fragment_offset, const sqfs_u32 *sizes,
                                         size_t count);

/// Allocates an inode of `type` (socket, fifo, device or symlink) with its link count, device
/// number and symlink target set. Exists because the symlink target lives in the inode's flexible
/// array member, which Swift cannot address. Free it with free().
sqfs_inode_generic_t *lc_sqfs_special_inode(int type, sqfs_u32 nlink, sqfs_u32 devno, const char *target,
                                            sqfs_u32 target_size);

/// Sets the link count of a file or directory inode, making a file inode extended when it has more
/// than one link (basic file inodes have no link count). Exists because the count lives in a union
/// member that depends on the inode type.
int lc_sqfs_set_link_count(sqfs_inode_generic_t *inode, sqfs_u32 nlink);

/// `decoder` (which it owns from then on), for reading an image of `block_size` blocks, made to
/// refuse as a block that does not decompress what the kernel's decoder for its compressor reads
/// otherwise. zstd: a frame whose window is larger than the kernel's decoder holds, max(`block_size`,
/// 8 KiB) (libzstd takes up to 128 MiB), or a block that goes on past its first frame (the kernel
/// stops there, libzstd decodes the next frame too). xz: a check other than CRC32 or none, a filter
/// chain other than one BCJ filter and LZMA2, or a dictionary larger than the image's (its options'
/// or its block size) (liblzma takes them all). Either read as written for `diff` and not, or not
/// all, for the booted system. Other compressors' decoders come back as they are; NULL, `decoder`
/// destroyed, when out of memory. Exists because libsquashfs offers no hook into a decompressor but
/// its function table, and its objects are C structs.
sqfs_compressor_t *lc_sqfs_kernel_decoder(sqfs_compressor_t *decoder, sqfs_u32 block_size);

/// The type-specific payload of an inode (a symlink's target, a file's block sizes). Exists
/// because it is a flexible array member, which Swift cannot address.
const void *lc_sqfs_inode_payload(const sqfs_inode_generic_t *inode);

/// The name of a directory entry (`size + 1` bytes, not NUL-terminated), for the same reason.
const sqfs_u8 *lc_sqfs_dir_entry_name(const sqfs_dir_entry_t *entry);

/// The key bytes of an xattr entry and the bytes of an xattr value, flexible array members too.
const sqfs_u8 *lc_sqfs_xattr_key(const sqfs_xattr_entry_t *entry);
const sqfs_u8 *lc_sqfs_xattr_value(const sqfs_xattr_value_t *value);

#endif
