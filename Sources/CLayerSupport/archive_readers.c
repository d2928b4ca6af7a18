// What libalpm may read: tar, in the compressions a pacman package or database is made with.
//
// libalpm opens every package and sync database with libarchive's
// archive_read_support_format_all and archive_read_support_filter_all. Both are wider than what
// pacman's files are: "all" formats reads a database or a package that is cpio, zip, rar, 7-Zip,
// ISO 9660, xar, cab or lha, each with its own parser, as root; "all" filters decompresses lrzip,
// grzip and lzop (libarchive here has no liblzo2) by running the host's program of that name.
// A repository is the layer author's choice, so these are its choices too.
//
// This file defines both functions in layerctl itself. The executable's definition comes first
// in the dynamic linker's search, and the linker exports a symbol that a library in the link
// (libalpm) refers to, so libalpm's calls land here: the same bytes are read by one parser, tar,
// and by decompressors that are libraries linked into libarchive, never a program. Our own
// readers name their filters and formats one by one and do not come here.
#include <archive.h>

int archive_read_support_format_all(struct archive *archive) {
    return archive_read_support_format_tar(archive);
}

/// makepkg's PKGEXT and repo-add's compressions, without .lrz and .lzo, which need a program.
/// A decompressor whose library libarchive was built without would run a program as well
/// (`gzip -d`, `zstd -d`, ...): those are left out, and such a package fails as one of no known
/// compression.
int archive_read_support_filter_all(struct archive *archive) {
    if (archive_zlib_version() != NULL) archive_read_support_filter_gzip(archive);
    if (archive_bzlib_version() != NULL) archive_read_support_filter_bzip2(archive);
    if (archive_liblzma_version() != NULL) {
        archive_read_support_filter_xz(archive);
        archive_read_support_filter_lzma(archive);
        archive_read_support_filter_lzip(archive);
    }
    if (archive_libzstd_version() != NULL) archive_read_support_filter_zstd(archive);
    if (archive_liblz4_version() != NULL) archive_read_support_filter_lz4(archive);
    return archive_read_support_filter_compress(archive);
}
