import Foundation
import Glibc
import LayerSupport
import SquashfsImage

/// `stage --uki`: the kernel, initramfs and command line staged as one unified kernel image.
extension BootStaging {
    /// What an image's file may hold to be read into memory for a unified kernel image: systemd's
    /// stub is about 100 KiB, os-release a few hundred bytes, a kernel and an initramfs tens of MiB.
    static let stubLimit: UInt64 = 16 << 20
    static let osReleaseLimit: UInt64 = 64 << 10
    static let bootFileLimit: UInt64 = 1 << 30

    /// Fails, before anything is copied out of the image, when it holds no systemd stub.
    static func requireStub(_ reader: SquashfsReader, shownAs: String) throws {
        guard try reader.exists(UnifiedKernelImage.stubPath) else {
            throw BootError(
                "\(shownAs) holds no \(UnifiedKernelImage.stubPath), systemd's EFI stub, of which --uki makes a unified kernel "
                    + "image: add systemd to its packages (Debian's image: systemd-boot-efi), or stage without --uki")
        }
    }

    /// Writes to `path` the unified kernel image of the image `reader` reads: its systemd stub,
    /// os-release and initramfs (`initrd`), `commandLine`, and `kernel`, a file staging copied out
    /// (and signed, when it signs, as systemd's ukify signs the kernel first). When staging signs,
    /// the whole file is signed too; `scratch` is the folder for the file sbsign reads.
    func writeUnifiedKernel(
        _ reader: SquashfsReader, kernel: String, initrd: String, commandLine: String, to path: String, scratch: String,
        shownAs: String
    ) throws {
        let stubPath = UnifiedKernelImage.stubPath
        func read(_ file: String, atMost limit: UInt64) throws -> [UInt8] {
            guard let bytes = try reader.contents(file, atMost: limit) else {
                throw BootError("\(file) in \(shownAs) holds more than \(formatBytes(Int64(limit))), more than a unified kernel image takes")
            }
            return bytes
        }
        let stub = try read(stubPath, atMost: Self.stubLimit)
        var osRelease: [UInt8]?
        for candidate in ["/etc/os-release", "/usr/lib/os-release"] where try osRelease == nil && reader.exists(candidate) {
            osRelease = try read(candidate, atMost: Self.osReleaseLimit)
        }
        let sections = UnifiedKernelImage.sections(
            osRelease: osRelease, commandLine: commandLine, initrd: try read(initrd, atMost: Self.bootFileLimit),
            kernel: [UInt8](try FileSystem.readRegularFile(kernel, atMost: Int64(Self.bootFileLimit))))
        let image = try UnifiedKernelImage.assemble(stub: stub, sections: sections, shownAs: "\(stubPath) in \(shownAs)")
        guard let signing else {
            try FileSystem.writeFile(Data(image), to: path)
            return
        }
        let unsigned = scratch + "/linux.efi.unsigned"
        defer { unlink(unsigned) }
        try FileSystem.writeFile(Data(image), to: unsigned)
        try signing.sign(unsigned, to: path, shownAs: shownAs, what: "unified kernel image")
    }
}
