// A floor under the speed of libalpm's downloads, kept by curl itself.
//
// libalpm sets each download's curl handle to give up below 1 byte a second for 10 s (pacman's
// setting): a server that sends a byte every half second holds a refresh or a fetch for ever.
// This file defines curl_easy_setopt in layerctl itself, as archive_readers.c defines
// libarchive's "all" readers: libalpm's calls land here, and reach libcurl's own function through
// dlsym(RTLD_NEXT). While the calling thread has a floor set (lc_set_download_floor), a low speed
// limit below the floor's bytes a second is raised to it, and the low speed time becomes the
// floor's (libalpm's 10 s, 30 s: a short lull is no stall). curl then ends a download that comes slower,
// and libalpm goes on to the repository's next server, as it does after any failed download.
// With no floor set (every other thread, and layerctl's own registry client) a call passes
// unchanged.
#define _GNU_SOURCE
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "CLayerSupport.h"

static _Thread_local long floor_bytes_per_second;
static _Thread_local long floor_seconds;

void lc_set_download_floor(long bytes_per_second, long seconds) {
    floor_bytes_per_second = bytes_per_second;
    floor_seconds = seconds;
}

typedef CURLcode (*setopt_function)(CURL *, CURLoption, ...);

static setopt_function libcurl_setopt(void) {
    static _Atomic(setopt_function) found;
    setopt_function function = atomic_load(&found);
    if (function == NULL) {
        function = (setopt_function)dlsym(RTLD_NEXT, "curl_easy_setopt");
        atomic_store(&found, function);
    }
    return function;
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...) {
    setopt_function setopt = libcurl_setopt();
    if (setopt == NULL) return CURLE_FAILED_INIT;
    va_list arguments;
    va_start(arguments, option);
    CURLcode result;
    // The value's type follows from the option's number (curl.h's CURLOPTTYPE_ ranges).
    if (option < CURLOPTTYPE_OBJECTPOINT) {
        long value = va_arg(arguments, long);
        if (option == CURLOPT_LOW_SPEED_LIMIT && value < floor_bytes_per_second) value = floor_bytes_per_second;
        if (option == CURLOPT_LOW_SPEED_TIME && floor_seconds > 0) value = floor_seconds;
        result = setopt(curl, option, value);
    } else if (option >= CURLOPTTYPE_OFF_T && option < CURLOPTTYPE_BLOB) {
        result = setopt(curl, option, va_arg(arguments, curl_off_t));
    } else {
        // Strings, lists, objects, blobs and callbacks: each one pointer.
        result = setopt(curl, option, va_arg(arguments, void *));
    }
    va_end(arguments);
    return result;
}
