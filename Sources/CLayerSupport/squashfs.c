#include "CLayerSupport.h"

#include <stdlib.h>
#include <string.h>

struct lc_hooked_compressor {
    sqfs_compressor_t base;
    sqfs_compressor_t *inner;
    lc_compressor_hooks hooks;
};

static void hooked_destroy(sqfs_object_t *object) {
    struct lc_hooked_compressor *self = (struct lc_hooked_compressor *)object;
    sqfs_destroy(self->inner);
    free(self);
}

static sqfs_object_t *hooked_copy(const sqfs_object_t *object) {
    const struct lc_hooked_compressor *self = (const struct lc_hooked_compressor *)object;
    return (sqfs_object_t *)lc_hooked_compressor_create(self->inner, &self->hooks);
}

static void hooked_get_configuration(const sqfs_compressor_t *cmp, sqfs_compressor_config_t *cfg) {
    const struct lc_hooked_compressor *self = (const struct lc_hooked_compressor *)cmp;
    self->inner->get_configuration(self->inner, cfg);
}

static int hooked_write_options(sqfs_compressor_t *cmp, sqfs_file_t *file) {
    struct lc_hooked_compressor *self = (struct lc_hooked_compressor *)cmp;
    return self->inner->write_options(self->inner, file);
}

static int hooked_read_options(sqfs_compressor_t *cmp, sqfs_file_t *file) {
    struct lc_hooked_compressor *self = (struct lc_hooked_compressor *)cmp;
    return self->inner->read_options(self->inner, file);
}

static sqfs_s32 hooked_do_block(sqfs_compressor_t *cmp, const sqfs_u8 *in, sqfs_u32 size, sqfs_u8 *out,
                                 sqfs_u32 outsize) {
    struct lc_hooked_compressor *self = (struct lc_hooked_compressor *)cmp;
    sqfs_u8 key[32];
    sqfs_s32 result = -1;
    if (self->hooks.lookup != NULL)
        result = (sqfs_s32)self->hooks.lookup(self->hooks.context, in, size, out, outsize, key);
    if (result < 0) {
        result = self->inner->do_block(self->inner, in, size, out, outsize);
        if (result >= 0 && self->hooks.store != NULL)
            self->hooks.store(self->hooks.context, key, out, result);
    }
    if (result >= 0 && self->hooks.account != NULL)
        self->hooks.account(self->hooks.context, size, result);
    return result;
}

sqfs_compressor_t *lc_hooked_compressor_create(const sqfs_compressor_t *inner, const lc_compressor_hooks *hooks) {
    struct lc_hooked_compressor *self = calloc(1, sizeof(*self));
    if (self == NULL)
        return NULL;
    self->inner = sqfs_copy(inner);
    if (self->inner == NULL) {
        free(self);
        return NULL;
    }
    self->hooks = *hooks;
    self->base.base.destroy = hooked_destroy;
    self->base.base.copy = hooked_copy;
    self->base.get_configuration = hooked_get_configuration;
    self->base.write_options = hooked_write_options;
    self->base.read_options = hooked_read_options;
    self->base.do_block = hooked_do_block;
    return &self->base;
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
