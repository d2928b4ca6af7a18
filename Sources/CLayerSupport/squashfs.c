#define _GNU_SOURCE
#include "CLayerSupport.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <sqfs/error.h>
#include <sqfs/io.h>

struct lc_fd_file {
    sqfs_file_t base;
    int fd;
    sqfs_u64 size;
    /* The errno of the last call that failed: libsquashfs passes on only SQFS_ERROR_IO. */
    int error;
};

static void fd_file_destroy(sqfs_object_t *object) { free(object); }

static int fd_file_read_at(sqfs_file_t *base, sqfs_u64 offset, void *buffer, size_t size) {
    struct lc_fd_file *file = (struct lc_fd_file *)base;
    if (offset + size > file->size)
        return SQFS_ERROR_OUT_OF_BOUNDS;
    while (size > 0) {
        ssize_t n = pread(file->fd, buffer, size, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            file->error = n == 0 ? EIO : errno;
            return SQFS_ERROR_IO;
        }
        buffer = (char *)buffer + n;
        offset += (sqfs_u64)n;
        size -= (size_t)n;
    }
    return 0;
}

static int fd_file_write_at(sqfs_file_t *base, sqfs_u64 offset, const void *buffer, size_t size) {
    struct lc_fd_file *file = (struct lc_fd_file *)base;
    sqfs_u64 end = offset + size;
    while (size > 0) {
        ssize_t n = pwrite(file->fd, buffer, size, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            file->error = n == 0 ? ENOSPC : errno;
            return SQFS_ERROR_IO;
        }
        buffer = (const char *)buffer + n;
        offset += (sqfs_u64)n;
        size -= (size_t)n;
    }
    if (end > file->size)
        file->size = end;
    return 0;
}

static sqfs_u64 fd_file_get_size(const sqfs_file_t *base) { return ((const struct lc_fd_file *)base)->size; }

static int fd_file_truncate(sqfs_file_t *base, sqfs_u64 size) {
    struct lc_fd_file *file = (struct lc_fd_file *)base;
    if (ftruncate(file->fd, (off_t)size) != 0) {
        file->error = errno;
        return SQFS_ERROR_IO;
    }
    file->size = size;
    return 0;
}

sqfs_file_t *lc_sqfs_fd_file(int fd) {
    struct lc_fd_file *file = calloc(1, sizeof(*file));
    if (file == NULL)
        return NULL;
    file->fd = fd;
    file->base.base.destroy = fd_file_destroy;
    file->base.read_at = fd_file_read_at;
    file->base.write_at = fd_file_write_at;
    file->base.get_size = fd_file_get_size;
    file->base.truncate = fd_file_truncate;
    return &file->base;
}

int lc_sqfs_fd_file_copy_in(sqfs_file_t *base, int in_fd, sqfs_u64 in_offset, sqfs_u64 at, size_t length) {
    struct lc_fd_file *file = (struct lc_fd_file *)base;
    if (lc_copy_range(in_fd, in_offset, file->fd, at, length) != 0)
        return -1;
    if (at + length > file->size)
        file->size = at + length;
    return 0;
}

int lc_sqfs_fd_file_error(const sqfs_file_t *base) { return ((const struct lc_fd_file *)base)->error; }

void lc_sqfs_fd_file_start_writeback(sqfs_file_t *base, sqfs_u64 offset, sqfs_u64 length) {
    lc_start_writeback(((struct lc_fd_file *)base)->fd, offset, length);
}

/* The copy through user space, where copy_file_range cannot (another file system, an O_APPEND
 * output: pwrite then appends). */
static int copy_by_reading(int in_fd, loff_t from, int out_fd, loff_t to, size_t length) {
    char buffer[1 << 16];
    while (length > 0) {
        size_t chunk = length < sizeof(buffer) ? length : sizeof(buffer);
        ssize_t n = pread(in_fd, buffer, chunk, from);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = pwrite(out_fd, buffer + done, (size_t)(n - done), to + done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            done += w;
        }
        from += n;
        to += n;
        length -= (size_t)n;
    }
    return 0;
}

int lc_copy_range(int in_fd, sqfs_u64 in_offset, int out_fd, sqfs_u64 out_offset, size_t length) {
    loff_t from = (loff_t)in_offset, to = (loff_t)out_offset;
    while (length > 0) {
        ssize_t n = copy_file_range(in_fd, &from, out_fd, &to, length, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                      (errno == EBADF && (fcntl(out_fd, F_GETFL) & O_APPEND))))
            return copy_by_reading(in_fd, from, out_fd, to, length);
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        length -= (size_t)n;
    }
    return 0;
}

void lc_start_writeback(int fd, sqfs_u64 offset, sqfs_u64 length) {
    sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
}

sqfs_inode_generic_t *lc_sqfs_file_inode(sqfs_u64 blocks_start, sqfs_u64 file_size, sqfs_u64 sparse,
                                         sqfs_u32 fragment_index, sqfs_u32 fragment_offset, const sqfs_u32 *sizes,
                                         size_t count) {
    size_t extra = count * sizeof(sqfs_u32);
    sqfs_inode_generic_t *inode = calloc(1, sizeof(*inode) + extra);
    if (inode == NULL)
        return NULL;
    inode->payload_bytes_available = (sqfs_u32)extra;
    inode->payload_bytes_used = (sqfs_u32)extra;
    if (count > 0)
        memcpy(inode->extra, sizes, extra);
    if (blocks_start > 0xFFFFFFFFu || file_size > 0xFFFFFFFFu || sparse > 0) {
        inode->base.type = SQFS_INODE_EXT_FILE;
        inode->data.file_ext.blocks_start = blocks_start;
        inode->data.file_ext.file_size = file_size;
        inode->data.file_ext.sparse = sparse;
        inode->data.file_ext.nlink = 1;
        inode->data.file_ext.fragment_idx = fragment_index;
        inode->data.file_ext.fragment_offset = fragment_offset;
        inode->data.file_ext.xattr_idx = 0xFFFFFFFFu;
    } else {
        inode->base.type = SQFS_INODE_FILE;
        inode->data.file.blocks_start = (sqfs_u32)blocks_start;
        inode->data.file.file_size = (sqfs_u32)file_size;
        inode->data.file.fragment_index = fragment_index;
        inode->data.file.fragment_offset = fragment_offset;
    }
    return inode;
}

sqfs_inode_generic_t *lc_sqfs_special_inode(int type, sqfs_u32 nlink, sqfs_u32 devno, const char *target,
                                            sqfs_u32 target_size) {
    size_t extra = type == SQFS_INODE_SLINK ? target_size : 0;
    sqfs_inode_generic_t *inode = calloc(1, sizeof(*inode) + extra);
    if (inode == NULL)
        return NULL;
    inode->base.type = (sqfs_u16)type;
    inode->payload_bytes_available = (sqfs_u32)extra;
    inode->payload_bytes_used = (sqfs_u32)extra;
    switch (type) {
    case SQFS_INODE_SLINK:
        inode->data.slink.nlink = nlink;
        inode->data.slink.target_size = target_size;
        memcpy(inode->extra, target, target_size);
        break;
    case SQFS_INODE_BDEV:
    case SQFS_INODE_CDEV:
        inode->data.dev.nlink = nlink;
        inode->data.dev.devno = devno;
        break;
    case SQFS_INODE_FIFO:
    case SQFS_INODE_SOCKET:
        inode->data.ipc.nlink = nlink;
        break;
    default:
        free(inode);
        return NULL;
    }
    return inode;
}

int lc_sqfs_set_link_count(sqfs_inode_generic_t *inode, sqfs_u32 nlink) {
    switch (inode->base.type) {
    case SQFS_INODE_FILE:
        if (nlink <= 1)
            return 0;
        if (sqfs_inode_make_extended(inode) != 0)
            return -1;
        inode->data.file_ext.nlink = nlink;
        return 0;
    case SQFS_INODE_EXT_FILE:
        inode->data.file_ext.nlink = nlink;
        return 0;
    case SQFS_INODE_DIR:
        inode->data.dir.nlink = nlink;
        return 0;
    case SQFS_INODE_EXT_DIR:
        inode->data.dir_ext.nlink = nlink;
        return 0;
    default:
        return -1;
    }
}

const void *lc_sqfs_inode_payload(const sqfs_inode_generic_t *inode) { return inode->extra; }

const sqfs_u8 *lc_sqfs_dir_entry_name(const sqfs_dir_entry_t *entry) { return entry->name; }

const sqfs_u8 *lc_sqfs_xattr_key(const sqfs_xattr_entry_t *entry) { return entry->key; }

const sqfs_u8 *lc_sqfs_xattr_value(const sqfs_xattr_value_t *value) { return value->value; }

/* A zstd frame as RFC 8878 (3.1.1) lays it out: the window its decoder must hold, and its length
 * (header, blocks, checksum). False when `in` does not hold a whole frame that starts with zstd's
 * magic; libzstd then says what is wrong with it. */
static bool lc_zstd_frame(const sqfs_u8 *in, sqfs_u32 size, sqfs_u64 *window, sqfs_u64 *length)
{
    static const sqfs_u32 id_bytes[4] = {0, 1, 2, 4};
    if (size < 6 || in[0] != 0x28 || in[1] != 0xB5 || in[2] != 0x2F || in[3] != 0xFD)
        return false;
    const sqfs_u8 descriptor = in[4];
    const unsigned content_flag = descriptor >> 6;
    const bool single = descriptor & 0x20;
    sqfs_u64 at = 5;
    if (!single) {
        /* A window descriptor: a power of two and eighths of it. */
        const sqfs_u64 base = (sqfs_u64)1 << (10 + (in[at] >> 3));
        *window = base + base / 8 * (in[at] & 7);
        at += 1;
    }
    at += id_bytes[descriptor & 3];
    const sqfs_u32 content_bytes = content_flag == 0 ? (single ? 1 : 0) : 2u << (content_flag - 1);
    if (at + content_bytes > size)
        return false;
    if (single) {
        /* One segment: the window is the content's size. */
        sqfs_u64 content = 0;
        for (sqfs_u32 i = 0; i < content_bytes; ++i)
            content |= (sqfs_u64)in[at + i] << (8 * i);
        *window = content_flag == 1 ? content + 256 : content;
    }
    at += content_bytes;
    for (;;) {
        if (at + 3 > size)
            return false;
        const sqfs_u32 block = in[at] | (sqfs_u32)in[at + 1] << 8 | (sqfs_u32)in[at + 2] << 16;
        const unsigned type = (block >> 1) & 3;
        if (type == 3)
            return false;
        /* Raw and compressed blocks hold their size in bytes; a run-length block, one byte. */
        at += 3 + (type == 1 ? 1 : block >> 3);
        if (block & 1)
            break;
    }
    if (descriptor & 0x04)
        at += 4;
    if (at > size)
        return false;
    *length = at;
    return true;
}

/* An xz variable-length integer (xz file format 1.0, 1.2): 7 bits a byte, low first, at most 9
 * bytes. False when it does not end before `end`. */
static bool lc_xz_number(const sqfs_u8 **at, const sqfs_u8 *end, sqfs_u64 *value)
{
    *value = 0;
    for (unsigned i = 0; i < 9 && *at < end; ++i) {
        const sqfs_u8 byte = *(*at)++;
        *value |= (sqfs_u64)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80))
            return true;
    }
    return false;
}

/* Whether the kernel's xz decoder refuses a block whose header is at `header` (xz file format 1.0,
 * 3.1): it takes one BCJ filter without properties at most, then LZMA2 with a dictionary of at most
 * `dictionary_limit` and a property it knows (liblzma takes any chain, any dictionary). False when
 * the header is not whole; liblzma then says what is wrong with it. */
static bool lc_xz_block_refused(const sqfs_u8 *header, const sqfs_u8 *end, sqfs_u64 dictionary_limit)
{
    if (end - header < 2 || header[0] == 0 || end - header < (header[0] + 1) * 4)
        return false;
    end = header + (header[0] + 1) * 4;
    const sqfs_u8 flags = header[1];
    const unsigned filters = (flags & 3) + 1;
    if (filters > 2)
        return true;
    const sqfs_u8 *at = header + 2;
    sqfs_u64 skipped = 0;
    if ((flags & 0x40) && !lc_xz_number(&at, end, &skipped))
        return false;
    if ((flags & 0x80) && !lc_xz_number(&at, end, &skipped))
        return false;
    for (unsigned filter = 0; filter < filters; ++filter) {
        sqfs_u64 id = 0;
        sqfs_u64 properties = 0;
        if (!lc_xz_number(&at, end, &id) || !lc_xz_number(&at, end, &properties) || properties > (sqfs_u64)(end - at))
            return false;
        if (filter + 1 < filters) {
            /* x86, PowerPC, ARM, ARM-Thumb, SPARC, ARM64, RISC-V; not IA-64's (0x06), which the
             * kernel refuses now (6.18 here) */
            if (id < 0x04 || id > 0x0B || id == 0x06 || properties != 0)
                return true;
            continue;
        }
        if (id != 0x21 || properties != 1 || at[0] > 39)
            return true;
        const sqfs_u64 dictionary = (sqfs_u64)(2 | (at[0] & 1)) << (at[0] / 2 + 11);
        return dictionary > dictionary_limit;
    }
    return false;
}

/* Whether the kernel's xz decoder refuses the stream `in` (xz file format 1.0) that liblzma reads:
 * a check other than CRC32 or none (the kernel verifies no other), or a block it refuses. The blocks
 * are found from the index, which the footer at the stream's end points to. False when `in` is not
 * such a stream, whole; liblzma then says what is wrong with it. */
static bool lc_xz_refused(const sqfs_u8 *in, sqfs_u32 size, sqfs_u64 dictionary_limit)
{
    static const sqfs_u8 magic[6] = {0xFD, '7', 'z', 'X', 'Z', 0x00};
    if (size < 24 || memcmp(in, magic, sizeof(magic)) != 0)
        return false;
    const sqfs_u8 check = in[7] & 0x0F;
    if (check > 0x01)
        return true;
    const sqfs_u8 *footer = in + size - 12;
    if (footer[10] != 'Y' || footer[11] != 'Z')
        return false;
    const sqfs_u64 backward =
        ((sqfs_u64)(footer[4] | footer[5] << 8 | footer[6] << 16 | (sqfs_u32)footer[7] << 24) + 1) * 4;
    if (backward > (sqfs_u64)(footer - in) - 12)
        return false;
    const sqfs_u8 *at = footer - backward;
    sqfs_u64 blocks = 0;
    if (*at++ != 0x00 || !lc_xz_number(&at, footer, &blocks))
        return false;
    const sqfs_u8 *block = in + 12;
    const sqfs_u32 check_bytes = check == 0x01 ? 4 : 0;
    for (sqfs_u64 number = 0; number < blocks; ++number) {
        sqfs_u64 unpadded = 0;
        sqfs_u64 uncompressed = 0;
        if (!lc_xz_number(&at, footer, &unpadded) || !lc_xz_number(&at, footer, &uncompressed))
            return false;
        if (lc_xz_block_refused(block, footer - backward, dictionary_limit))
            return true;
        const sqfs_u64 padded = (unpadded + 3) / 4 * 4;
        if (unpadded < check_bytes || padded > (sqfs_u64)(footer - backward - block))
            return false;
        block += padded;
    }
    return false;
}

/* A decompressor that refuses, before the library it wraps reads them, the blocks the kernel's
 * decoder for the same compressor would not read as that library does. */
typedef struct {
    sqfs_compressor_t base;
    sqfs_compressor_t *inner;
    sqfs_u16 id;
    /* zstd: the largest window; xz: the largest dictionary. */
    sqfs_u64 limit;
} lc_kernel_decoder_t;

static void lc_kernel_decoder_destroy(sqfs_object_t *object)
{
    lc_kernel_decoder_t *self = (lc_kernel_decoder_t *)object;
    sqfs_destroy(self->inner);
    free(self);
}

static void lc_kernel_decoder_configuration(const sqfs_compressor_t *cmp, sqfs_compressor_config_t *cfg)
{
    const lc_kernel_decoder_t *self = (const lc_kernel_decoder_t *)cmp;
    self->inner->get_configuration(self->inner, cfg);
}

static int lc_kernel_decoder_write_options(sqfs_compressor_t *cmp, sqfs_file_t *file)
{
    lc_kernel_decoder_t *self = (lc_kernel_decoder_t *)cmp;
    return self->inner->write_options(self->inner, file);
}

static int lc_kernel_decoder_read_options(sqfs_compressor_t *cmp, sqfs_file_t *file)
{
    lc_kernel_decoder_t *self = (lc_kernel_decoder_t *)cmp;
    return self->inner->read_options(self->inner, file);
}

static sqfs_s32 lc_kernel_decoder_block(sqfs_compressor_t *cmp, const sqfs_u8 *in, sqfs_u32 size, sqfs_u8 *out,
                                        sqfs_u32 outsize)
{
    lc_kernel_decoder_t *self = (lc_kernel_decoder_t *)cmp;
    if (self->id == SQFS_COMP_ZSTD) {
        sqfs_u64 window = 0;
        sqfs_u64 length = 0;
        /* The kernel's decoder holds a window of the block size, and stops at the first frame's
         * end; libzstd goes on into any frame after it. */
        if (lc_zstd_frame(in, size, &window, &length) && (window > self->limit || length != size))
            return SQFS_ERROR_COMPRESSOR;
    } else if (self->id == SQFS_COMP_XZ && lc_xz_refused(in, size, self->limit)) {
        return SQFS_ERROR_COMPRESSOR;
    }
    return self->inner->do_block(self->inner, in, size, out, outsize);
}

sqfs_compressor_t *lc_sqfs_kernel_decoder(sqfs_compressor_t *decoder, sqfs_u32 block_size)
{
    sqfs_compressor_config_t config;
    decoder->get_configuration(decoder, &config);
    if (config.id != SQFS_COMP_ZSTD && config.id != SQFS_COMP_XZ)
        return decoder;
    lc_kernel_decoder_t *self = calloc(1, sizeof(*self));
    if (self == NULL) {
        sqfs_destroy(decoder);
        return NULL;
    }
    self->base.base.destroy = lc_kernel_decoder_destroy;
    self->base.get_configuration = lc_kernel_decoder_configuration;
    self->base.write_options = lc_kernel_decoder_write_options;
    self->base.read_options = lc_kernel_decoder_read_options;
    self->base.do_block = lc_kernel_decoder_block;
    self->inner = decoder;
    self->id = config.id;
    /* The kernel sizes both by the block size, or for xz by the dictionary the image's options
     * name, and never below a metadata block's 8 KiB. */
    const sqfs_u64 limit = config.id == SQFS_COMP_XZ ? config.opt.xz.dict_size : block_size;
    self->limit = limit > 8192 ? limit : 8192;
    return (sqfs_compressor_t *)self;
}
