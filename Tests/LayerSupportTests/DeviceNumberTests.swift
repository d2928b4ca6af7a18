import CLayerSupport
import LayerSupport
import Testing

/// Device numbers as squashfs stores them, against glibc's own makedev, major and minor.
@Suite("Device numbers")
struct DeviceNumberTests {
    @Test("every major up to 4095 and minors across all 20 bits survive the 32-bit encoding")
    func roundTrip() {
        var failures: [String] = []
        for major: UInt32 in [0, 1, 8, 10, 136, 254, 255, 256, 300, 511, 4094, 4095] {
            for minor: UInt32 in [0, 1, 3, 255, 256, 4095, 4096, 70_000, 65_535, 1 << 19, (1 << 20) - 1] {
                let rdev = UInt64(lc_makedev(major, minor))
                let encoded = DeviceNumber.encode(rdev)
                let decoded = DeviceNumber.decode(encoded)
                if decoded != rdev || lc_major(decoded) != major || lc_minor(decoded) != minor {
                    failures.append("\(major):\(minor) -> \(encoded) -> \(decoded)")
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(10))")
    }

    @Test("the devices Linux has: majors up to 4095, minors up to 1,048,575, as mknod takes them")
    func exists() throws {
        #expect(DeviceNumber.exists(major: 0, minor: 0) && DeviceNumber.exists(major: 4095, minor: (1 << 20) - 1))
        #expect(!DeviceNumber.exists(major: 4096, minor: 0) && !DeviceNumber.exists(major: 0, minor: 1 << 20))
        #expect(!DeviceNumber.exists(major: UInt64(UInt32.max), minor: 0))
    }

    @Test("the encoding is the kernel's: 8 low bits of minor, 12 of major, then the high minor bits")
    func layout() {
        #expect(DeviceNumber.encode(UInt64(lc_makedev(8, 1))) == 0x0801)
        #expect(DeviceNumber.encode(UInt64(lc_makedev(1, 3))) == 0x0103)
        #expect(DeviceNumber.encode(UInt64(lc_makedev(300, 70_000))) == 0x1111_2C70)
        #expect(DeviceNumber.encode(0) == 0)
    }
}
