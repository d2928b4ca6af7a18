// How libalpm extracts package files in a builder child: with their times clamped to the layer's
// epoch, and with libarchive's symlink check made in two system calls where it makes one per
// component of the path.
//
// As in archive_readers.c, layerctl defines the functions libalpm calls, so the dynamic linker
// binds libalpm's calls here; each passes the call on to libarchive's own (dlsym(RTLD_NEXT)), and
// changes something only in a builder child that asked for it, before its transaction
// (lc_clamp_extracted_times, lc_check_extracted_paths_quickly). libalpm extracts one file at a
// time, on one thread: it makes a writer (archive_write_disk_new), sets its options, calls
// archive_read_extract2 and frees the writer.
//
// Times. A layer's entries have their mtime clamped to the epoch (whole seconds), which the
// builder's normaliser does for each entry that lacks it once the build is over: for a base layer
// that is every file of every package (their times are when they were packaged), one utimensat by
// path each, 7 to 10 ms of the 0.13 s of CPU that layerctl's own process takes for the cold base
// layer of Benchmarks/build.sh. libalpm extracts with ARCHIVE_EXTRACT_TIME, so libarchive sets the
// time from the entry with the file open; given the clamped time in the entry, it sets that
// instead, at no cost. The tree ends the same (what the normaliser would set, it finds set), and
// what the transaction's hooks and the layer's steps read of a package file's time is the time it
// has in the layer.
//
// Symlinks. libalpm asks for ARCHIVE_EXTRACT_SECURE_SYMLINKS (with ARCHIVE_EXTRACT_UNLINK): before
// each file, libarchive 3.6 walks its path a component at a time, an fstatat, an open and a close
// each (/usr/share/perl5/core_perl/unicore/lib/Nv/5.pl is 24 calls), to remove a symlink on the
// way or refuse to write through it. In the benchmark's cold base layer that was 78,000 of the
// transaction's system calls, a fifth of its CPU (pacman pays the same). Where the path is plain
// and openat2 with RESOLVE_NO_SYMLINKS opens its folder (no component on the way is a symlink,
// each is a folder) and its last component is no symlink, libarchive's walk would find nothing
// to do: the file is extracted without it, and where the last component is missing, without the
// unlink libarchive makes first (ARCHIVE_EXTRACT_UNLINK), which would fail. The folder stays open
// for the package's next file, which is mostly in the same one (1,245 openat2 calls where there
// were 3,268 in that cold base layer), until the package is freed or an entry that is no regular
// file is extracted. Anything else (a symlink on the way, a folder not yet made, a hard link,
// whose target libarchive checks too, a kernel without openat2) is left to libarchive's walk,
// which does what it always did. Nothing runs between the check and the extraction but this
// thread; a process the transaction started (a scriptlet's daemon) could change the path
// meanwhile, as it could between libarchive's own check and its write.
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "CLayerSupport.h"

typedef int (*extract2_function)(struct archive *, struct archive_entry *, struct archive *);
typedef int (*set_options_function)(struct archive *, int);
typedef int (*read_free_function)(struct archive *);

static extract2_function libarchive_extract2;
static set_options_function libarchive_set_options;
static read_free_function libarchive_read_free;
static pthread_once_t found_libarchive = PTHREAD_ONCE_INIT;
static int clamping;
static int64_t clamp_epoch;
static int checking_quickly;
// The writer whose options were set last, and those options, until the extraction that uses it.
static struct archive *options_writer;
static int writer_options;
// The folder of the last file checked, open (O_PATH), with its path, while the package it came
// from is open: a package's files come folder by folder, and a file in the folder of the one
// before needs no openat2 of its own. Only libalpm's extraction of that package runs meanwhile
// (its scriptlets run before the package is opened and after it is freed), and it changes a
// folder on the way only by extracting an entry that is no regular file, after which the folder
// is opened again.
static int last_folder = -1;
static char last_folder_path[PATH_MAX];
static struct archive *last_folder_archive;

static void forget_last_folder(void) {
    if (last_folder >= 0) close(last_folder);
    last_folder = -1;
    last_folder_archive = NULL;
}

static void find_libarchive(void) {
    libarchive_extract2 = (extract2_function)dlsym(RTLD_NEXT, "archive_read_extract2");
    libarchive_set_options = (set_options_function)dlsym(RTLD_NEXT, "archive_write_disk_set_options");
    libarchive_read_free = (read_free_function)dlsym(RTLD_NEXT, "archive_read_free");
    if (libarchive_extract2 == NULL || libarchive_set_options == NULL || libarchive_read_free == NULL) {
        // libarchive is linked into layerctl, so this cannot happen but with a broken install.
        fprintf(stderr,
                "layerctl: libarchive's archive_read_extract2, archive_write_disk_set_options or archive_read_free was not "
                "found: %s\n",
                dlerror());
        abort();
    }
}

void lc_clamp_extracted_times(int64_t epoch) {
    clamp_epoch = epoch;
    clamping = 1;
}

void lc_check_extracted_paths_quickly(void) { checking_quickly = 1; }

int archive_write_disk_set_options(struct archive *writer, int options) {
    pthread_once(&found_libarchive, find_libarchive);
    options_writer = writer;
    writer_options = options;
    return libarchive_set_options(writer, options);
}

enum path_check { walk_needed, no_symlink, missing };

int archive_read_free(struct archive *archive) {
    pthread_once(&found_libarchive, find_libarchive);
    if (archive != NULL && archive == last_folder_archive) forget_last_folder();
    return libarchive_read_free(archive);
}

/// Whether libarchive's symlink check of `path`, an entry of `archive`, would find nothing to do:
/// a plain path (no empty, "." or ".." component) whose folder openat2 opens with
/// RESOLVE_NO_SYMLINKS (or is the last file's, `last_folder`) and whose last component is no
/// symlink (`no_symlink`) or missing (`missing`). `walk_needed` for anything else, failures
/// included.
static enum path_check free_of_symlinks(struct archive *archive, const char *path) {
    size_t length = strlen(path);
    if (length == 0 || length >= PATH_MAX) return walk_needed;
    char folder_path[PATH_MAX];
    memcpy(folder_path, path, length + 1);
    // A folder's entry ends in a slash, which libarchive's check passes over.
    if (length > 1 && folder_path[length - 1] == '/') folder_path[--length] = '\0';
    for (const char *component = folder_path[0] == '/' ? folder_path + 1 : folder_path;;) {
        const char *end = strchr(component, '/');
        size_t size = end != NULL ? (size_t)(end - component) : strlen(component);
        if (size == 0 || (size == 1 && component[0] == '.') || (size == 2 && component[0] == '.' && component[1] == '.')) {
            return walk_needed;
        }
        if (end == NULL) break;
        component = end + 1;
    }
    char *slash = strrchr(folder_path, '/');
    const char *last = folder_path;
    int folder = AT_FDCWD;
    if (slash != NULL) {
        *slash = '\0';
        last = slash + 1;
        const char *name = slash == folder_path ? "/" : folder_path;
        if (last_folder >= 0 && archive == last_folder_archive && strcmp(name, last_folder_path) == 0) {
            folder = last_folder;
        } else {
            struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_SYMLINKS};
            folder = (int)syscall(SYS_openat2, AT_FDCWD, name, &how, sizeof how);
            if (folder < 0) return walk_needed;
            forget_last_folder();
            last_folder = folder;
            last_folder_archive = archive;
            memcpy(last_folder_path, name, strlen(name) + 1);
        }
    }
    struct stat st;
    int found = fstatat(folder, last, &st, AT_SYMLINK_NOFOLLOW);
    int error = errno;
    if (found == 0) return S_ISLNK(st.st_mode) ? walk_needed : no_symlink;
    return error == ENOENT ? missing : walk_needed;
}

int archive_read_extract2(struct archive *archive, struct archive_entry *entry, struct archive *writer) {
    pthread_once(&found_libarchive, find_libarchive);
    if (clamping && archive_entry_mtime_is_set(entry)) {
        int64_t seconds = (int64_t)archive_entry_mtime(entry);
        if (seconds > clamp_epoch || archive_entry_mtime_nsec(entry) != 0) {
            archive_entry_set_mtime(entry, (time_t)(seconds > clamp_epoch ? clamp_epoch : seconds), 0);
        }
    }
    // The options are known only for the writer they were just set on: a writer made since
    // (perhaps at the freed one's address) has its own.
    int known = writer == options_writer;
    options_writer = NULL;
    enum path_check check = walk_needed;
    if (checking_quickly && known && (writer_options & ARCHIVE_EXTRACT_SECURE_SYMLINKS) != 0 &&
        archive_entry_hardlink(entry) == NULL && archive_entry_pathname(entry) != NULL) {
        check = free_of_symlinks(archive, archive_entry_pathname(entry));
    }
    // A folder, a symlink or a hard link may change a folder on the way to the next file.
    if (archive_entry_filetype(entry) != AE_IFREG || archive_entry_hardlink(entry) != NULL) forget_last_folder();
    if (check != walk_needed) {
        // Where nothing is at the path, libarchive's unlink of it (ARCHIVE_EXTRACT_UNLINK) would
        // fail with ENOENT, which it takes as done: one system call less.
        int dropped = ARCHIVE_EXTRACT_SECURE_SYMLINKS | (check == missing ? ARCHIVE_EXTRACT_UNLINK : 0);
        libarchive_set_options(writer, writer_options & ~dropped);
        int result = libarchive_extract2(archive, entry, writer);
        libarchive_set_options(writer, writer_options);
        return result;
    }
    return libarchive_extract2(archive, entry, writer);
}
