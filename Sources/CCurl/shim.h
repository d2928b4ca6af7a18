#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: one typed
// wrapper per kind of value.
static inline CURLcode lc_curl_set_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode lc_curl_set_offset(CURL *curl, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode lc_curl_set_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode lc_curl_set_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}
typedef size_t (*lc_curl_data_function)(char *buffer, size_t size, size_t count, void *context);
static inline CURLcode lc_curl_set_function(CURL *curl, CURLoption option, lc_curl_data_function value) {
    return curl_easy_setopt(curl, option, value);
}
// Certificates to trust, copied by libcurl: `length` bytes of PEM.
static inline CURLcode lc_curl_set_ca_bundle(CURL *curl, const void *data, size_t length) {
    struct curl_blob blob = {(void *)data, length, CURL_BLOB_COPY};
    return curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
}
typedef int (*lc_curl_seek_function)(void *context, curl_off_t offset, int origin);
static inline CURLcode lc_curl_set_seek(CURL *curl, lc_curl_seek_function value) {
    return curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, value);
}
static inline CURLcode lc_curl_get_long(CURL *curl, CURLINFO info, long *value) {
    return curl_easy_getinfo(curl, info, value);
}
