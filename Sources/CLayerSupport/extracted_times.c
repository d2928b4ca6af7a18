// The times libalpm gives the files it extracts, clamped to the layer's epoch as they are written.
//
// A layer's entries have their mtime clamped to the epoch (whole seconds), which the builder's
// normaliser does for each entry that lacks it once the build is over: for a base layer that is
// every file of every package (their times are when they were packaged), one utimensat by path
// each, 7 to 10 ms of the 0.13 s of CPU that layerctl's own process takes for the cold base layer
// of Benchmarks/build.sh. libalpm extracts each file with archive_read_extract2 and
// ARCHIVE_EXTRACT_TIME, so libarchive sets the time from the entry with the file open; given the
// clamped time in the entry, it sets that instead, at no cost. The tree ends the same (what the
// normaliser would set, it finds set), and what the transaction's hooks and the layer's steps
// read of a package file's time is the time it has in the layer.
//
// As in archive_readers.c, layerctl defines the function libalpm calls, so the dynamic linker
// binds libalpm's call here; this passes each call on to libarchive's own, and changes the entry
// only in a builder child that asked for it (lc_clamp_extracted_times), before its transaction.
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "CLayerSupport.h"

typedef int (*extract2_function)(struct archive *, struct archive_entry *, struct archive *);

static extract2_function libarchive_extract2;
static pthread_once_t found_libarchive_extract2 = PTHREAD_ONCE_INIT;
static int clamping;
static int64_t clamp_epoch;

static void find_libarchive_extract2(void) {
    libarchive_extract2 = (extract2_function)dlsym(RTLD_NEXT, "archive_read_extract2");
}

void lc_clamp_extracted_times(int64_t epoch) {
    clamp_epoch = epoch;
    clamping = 1;
}

int archive_read_extract2(struct archive *archive, struct archive_entry *entry, struct archive *writer) {
    pthread_once(&found_libarchive_extract2, find_libarchive_extract2);
    if (libarchive_extract2 == NULL) {
        // libarchive is linked into layerctl, so this cannot happen but with a broken install.
        fprintf(stderr, "layerctl: libarchive's archive_read_extract2 was not found: %s\n", dlerror());
        abort();
    }
    if (clamping && archive_entry_mtime_is_set(entry)) {
        int64_t seconds = (int64_t)archive_entry_mtime(entry);
        if (seconds > clamp_epoch || archive_entry_mtime_nsec(entry) != 0) {
            archive_entry_set_mtime(entry, (time_t)(seconds > clamp_epoch ? clamp_epoch : seconds), 0);
        }
    }
    return libarchive_extract2(archive, entry, writer);
}
