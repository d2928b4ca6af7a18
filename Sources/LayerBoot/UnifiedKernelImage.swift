import Foundation

/// A unified kernel image (UKI, the UAPI group's Type #2 boot entry): systemd's EFI stub, with the
/// kernel, its initramfs, its command line and the system's os-release added as PE sections of
/// their own (`.linux`, `.initrd`, `.cmdline`, `.osrel`), which the stub hands to the kernel it
/// starts. Signed whole, it puts the initramfs and the command line under the Secure Boot
/// signature too: with Secure Boot on, the stub ignores a command line its boot loader passes.
///
/// The stub is the image's, so it is untrusted input: every offset and size is checked against
/// the file before it is used. The output is the same bytes for the same inputs.
package struct UnifiedKernelImage {
    package struct Section {
        /// At most 8 bytes, as a PE section table holds names.
        package var name: String
        package var data: [UInt8]

        package init(name: String, data: [UInt8]) {
            self.name = name
            self.data = data
        }
    }

    /// Where systemd installs its stub (Arch: the systemd package; Debian: systemd-boot-efi).
    static let stubPath = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

    /// The sections of a UKI, in the order systemd's ukify writes them: `.linux`, the largest, last.
    package static func sections(osRelease: [UInt8]?, commandLine: String, initrd: [UInt8], kernel: [UInt8]) -> [Section] {
        (osRelease.map { [Section(name: ".osrel", data: $0)] } ?? [])
            + [
                Section(name: ".cmdline", data: Array(commandLine.utf8)), Section(name: ".initrd", data: initrd),
                Section(name: ".linux", data: kernel),
            ]
    }

    /// Initialized data the program reads (IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ).
    static let readOnlyData: UInt32 = 0x4000_0040

    /// `stub` (a PE32 or PE32+ EFI program, as read from `shownAs`) with `sections` appended, each
    /// at the next file and section alignment after the stub's own. A COFF symbol table or an
    /// Authenticode signature the stub carried is dropped: the first would lie in the new
    /// sections' way, the second is no longer the file's.
    package static func assemble(stub: [UInt8], sections: [Section], shownAs: String) throws -> [UInt8] {
        func refused(_ why: String) -> BootError {
            BootError("\(shownAs) is no EFI stub a unified kernel image can be made of: \(why)")
        }
        var file = PortableExecutableBytes(stub)
        guard stub.count >= 64, file.u16(0) == 0x5A4D else { throw refused("it does not start as a PE file (MZ)") }
        let signature = Int(file.u32(0x3C))
        guard signature <= stub.count - 24, file.u32(signature) == 0x0000_4550 else { throw refused("it has no PE header") }
        let coff = signature + 4
        let sectionCount = Int(file.u16(coff + 2))
        let optionalSize = Int(file.u16(coff + 16))
        let optional = coff + 20
        guard optionalSize >= 68, optional + optionalSize <= stub.count else { throw refused("its optional header is cut short") }
        // PE32+ (0x20b) and PE32 (0x10b) differ before and after these fields, not in them.
        let magic = file.u16(optional)
        guard magic == 0x20B || magic == 0x10B else { throw refused("its optional header's magic is \(magic), not PE32 or PE32+") }
        let directories = optional + (magic == 0x20B ? 112 : 96)
        let directoryCount = Int(file.u32(optional + (magic == 0x20B ? 108 : 92)))
        let sectionAlignment = Int(file.u32(optional + 32))
        let fileAlignment = Int(file.u32(optional + 36))
        let headersSize = Int(file.u32(optional + 60))
        func isPowerOfTwo(_ value: Int) -> Bool { value > 0 && value & (value - 1) == 0 }
        guard isPowerOfTwo(fileAlignment), isPowerOfTwo(sectionAlignment), fileAlignment <= 1 << 16,
            sectionAlignment <= 1 << 24, sectionAlignment >= fileAlignment
        else { throw refused("its section alignment (\(sectionAlignment)) or file alignment (\(fileAlignment)) is not one PE allows") }
        guard sectionCount + sections.count <= 0xFFFF else {
            throw refused("its section table holds \(sectionCount) sections: with the \(sections.count) a unified kernel image adds, more than the 65535 a PE file holds")
        }
        let table = optional + optionalSize
        let tableEnd = table + 40 * sectionCount
        guard headersSize <= stub.count, tableEnd <= headersSize else { throw refused("its section table runs past its headers") }

        var dataEnd = headersSize
        var virtualEnd = 0
        var firstData = headersSize
        for index in 0..<sectionCount {
            let header = table + 40 * index
            let name = String(decoding: stub[header..<header + 8].prefix { $0 != 0 }, as: UTF8.self)
            if sections.contains(where: { $0.name == name }) {
                throw refused("it holds a \(name) section already (a unified kernel image, not a stub)")
            }
            let virtualSize = Int(file.u32(header + 8)), address = Int(file.u32(header + 12))
            let rawSize = Int(file.u32(header + 16)), rawOffset = Int(file.u32(header + 20))
            guard rawOffset + rawSize <= stub.count else { throw refused("its section \(name) runs past the end of the file") }
            if rawSize > 0 {
                guard rawOffset >= tableEnd else { throw refused("its section \(name) lies in its section table") }
                dataEnd = max(dataEnd, rawOffset + rawSize)
                firstData = min(firstData, rawOffset)
            }
            virtualEnd = max(virtualEnd, address + max(virtualSize, rawSize))
        }
        let room = (firstData - tableEnd) / 40
        guard room >= sections.count else {
            throw refused("its headers hold room for \(room) more sections, and a unified kernel image adds \(sections.count)")
        }

        // What follows the last section (a symbol table, a signature) goes.
        file.bytes.removeLast(file.bytes.count - dataEnd)
        file.put32(0, at: coff + 8)
        file.put32(0, at: coff + 12)
        if directoryCount > 4, directories + 40 <= optional + optionalSize {
            file.put32(0, at: directories + 32)
            file.put32(0, at: directories + 36)
        }
        func aligned(_ value: Int, _ alignment: Int) -> Int { (value + alignment - 1) / alignment * alignment }
        // SizeOfImage, the end of the last section added, must fit its 32 bits.
        let imageEnd = sections.reduce(aligned(virtualEnd, sectionAlignment)) { aligned($0 + $1.data.count, sectionAlignment) }
        guard imageEnd <= UInt32.max else {
            throw refused(
                "its sections end at 0x\(String(virtualEnd, radix: 16)) in memory, where the \(sections.count) a unified kernel image adds would pass the 4 GiB a PE file addresses")
        }
        var address = aligned(virtualEnd, sectionAlignment)
        var initializedData = Int(file.u32(optional + 8))
        for (index, section) in sections.enumerated() {
            file.bytes.append(contentsOf: [UInt8](repeating: 0, count: aligned(file.bytes.count, fileAlignment) - file.bytes.count))
            let rawSize = aligned(section.data.count, fileAlignment)
            guard file.bytes.count + rawSize < 1 << 32 else {
                throw BootError("a unified kernel image of \(shownAs) would pass the 4 GiB a PE file can hold")
            }
            let header = tableEnd + 40 * index
            var name = Array(section.name.utf8.prefix(8))
            name += [UInt8](repeating: 0, count: 8 - name.count)
            file.bytes.replaceSubrange(header..<header + 8, with: name)
            file.put32(UInt32(section.data.count), at: header + 8)
            file.put32(UInt32(address), at: header + 12)
            file.put32(UInt32(rawSize), at: header + 16)
            file.put32(UInt32(file.bytes.count), at: header + 20)
            for offset in stride(from: 24, to: 36, by: 4) { file.put32(0, at: header + offset) }
            file.put32(readOnlyData, at: header + 36)
            file.bytes.append(contentsOf: section.data)
            file.bytes.append(contentsOf: [UInt8](repeating: 0, count: rawSize - section.data.count))
            address = aligned(address + section.data.count, sectionAlignment)
            initializedData += rawSize
        }
        file.put16(UInt16(sectionCount + sections.count), at: coff + 2)
        file.put32(UInt32(address), at: optional + 56)
        file.put32(UInt32(truncatingIfNeeded: initializedData), at: optional + 8)
        file.put32(file.checksum(skipping: optional + 64), at: optional + 64)
        return file.bytes
    }
}

/// Little-endian fields of a PE file in memory. Reads past the end give 0: callers check every
/// offset they follow against the file's size first.
struct PortableExecutableBytes {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func u16(_ offset: Int) -> UInt16 {
        guard offset >= 0, offset + 2 <= bytes.count else { return 0 }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }

    mutating func put16(_ value: UInt16, at offset: Int) {
        bytes[offset] = UInt8(truncatingIfNeeded: value)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    mutating func put32(_ value: UInt32, at offset: Int) {
        put16(UInt16(truncatingIfNeeded: value), at: offset)
        put16(UInt16(truncatingIfNeeded: value >> 16), at: offset + 2)
    }

    /// The optional header's CheckSum as Windows' linker computes it: the file's 16-bit words
    /// summed with their carries folded back in, the field itself left out, plus the file's size.
    func checksum(skipping field: Int) -> UInt32 {
        var sum: UInt64 = 0
        bytes.withUnsafeBufferPointer { buffer in
            var offset = 0
            while offset + 1 < buffer.count {
                if offset != field && offset != field + 2 { sum += UInt64(buffer[offset]) | UInt64(buffer[offset + 1]) << 8 }
                offset += 2
            }
            if offset < buffer.count { sum += UInt64(buffer[offset]) }
        }
        // Folded to 16 bits: the carries go back in, as adding 16 bits at a time with carry does.
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return UInt32(sum) + UInt32(truncatingIfNeeded: bytes.count)
    }
}
