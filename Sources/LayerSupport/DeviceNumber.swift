/// Device numbers as squashfs stores them: the kernel's 32-bit encoding (new_encode_dev: 12 bits
/// of major, 20 of minor), against `st_rdev` as glibc lays it out (makedev: 32 bits of each).
package enum DeviceNumber {
    /// `rdev` (an `st_rdev`) in the kernel's 32-bit encoding. Majors above 4095 and minors above
    /// 1,048,575 do not fit; squashfs cannot hold them either.
    package static func encode(_ rdev: UInt64) -> UInt32 {
        let major = UInt32(truncatingIfNeeded: ((rdev >> 8) & 0xfff) | ((rdev >> 32) & ~0xfff))
        let minor = UInt32(truncatingIfNeeded: (rdev & 0xff) | ((rdev >> 12) & ~0xff))
        return (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
    }

    /// Whether Linux has the device `major`:`minor`: mknod refuses any other with EINVAL.
    package static func exists(major: UInt64, minor: UInt64) -> Bool { major <= 0xfff && minor <= 0xfffff }

    /// The kernel's new_decode_dev, then glibc's makedev: what lstat's `st_rdev` says for the node.
    package static func decode(_ encoded: UInt32) -> UInt64 {
        let major = UInt64((encoded & 0xfff00) >> 8)
        let minor = UInt64((encoded & 0xff) | ((encoded >> 12) & 0xfff00))
        return ((major & 0xffff_f000) << 32) | ((major & 0xfff) << 8) | ((minor & 0xffff_ff00) << 12) | (minor & 0xff)
    }
}
