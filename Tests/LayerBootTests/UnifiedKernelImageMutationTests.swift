import Foundation
import LayerBoot
import Testing

/// The stub `stage --uki` builds on is the image's, so a stranger's: mutants of it, every field of
/// its headers set in turn to the values that break arithmetic (0, 1, the file's size and one
/// either side, 2^31, 4 GiB less a page, 2^32 - 1), the file cut short at each structure, then
/// random mutants from a fixed seed. Whatever a mutant is, `assemble` returns, it does not trap:
/// it refuses in one line that names the stub, or it writes a PE file that a reader of its own
/// here finds sound (`problems(of:stub:sections:)`). The stubs are the test's own and, where they
/// are here, systemd's (Debian 12's, and Debian 13's from scripts/fetch-stub.sh).
@Suite("Unified kernel images of mutated stubs")
struct UnifiedKernelImageMutationTests {
    /// How many random mutants each stub gets, after the systematic ones.
    static let mutants = 400

    /// SplitMix64: the same mutants on every machine.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    typealias Tests = UnifiedKernelImageTests

    static func field(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> Int? {
        offset >= 0 && offset + size <= bytes.count ? Tests.field(bytes, offset, size) : nil
    }

    /// A field of a stub's headers: where it is and how wide.
    struct Field {
        var name: String
        var offset: Int
        var size: Int
    }

    /// Every field of `stub`'s headers that `assemble` reads, as the unmutated stub lays them out.
    static func fields(of stub: [UInt8]) -> [Field] {
        let pe = Tests.field(stub, 0x3C, 4)
        let coff = pe + 4
        let optional = coff + 20
        let plus = Tests.field(stub, optional, 2) == 0x20B
        let directories = optional + (plus ? 112 : 96)
        var fields = [
            Field(name: "e_lfanew", offset: 0x3C, size: 4), Field(name: "Signature", offset: pe, size: 4),
            Field(name: "NumberOfSections", offset: coff + 2, size: 2),
            Field(name: "PointerToSymbolTable", offset: coff + 8, size: 4),
            Field(name: "NumberOfSymbols", offset: coff + 12, size: 4),
            Field(name: "SizeOfOptionalHeader", offset: coff + 16, size: 2),
            Field(name: "Magic", offset: optional, size: 2),
            Field(name: "SizeOfInitializedData", offset: optional + 8, size: 4),
            Field(name: "SectionAlignment", offset: optional + 32, size: 4),
            Field(name: "FileAlignment", offset: optional + 36, size: 4),
            Field(name: "SizeOfImage", offset: optional + 56, size: 4),
            Field(name: "SizeOfHeaders", offset: optional + 60, size: 4),
            Field(name: "CheckSum", offset: optional + 64, size: 4),
            Field(name: "NumberOfRvaAndSizes", offset: optional + (plus ? 108 : 92), size: 4),
            Field(name: "certificate table", offset: directories + 32, size: 4),
            Field(name: "certificate table size", offset: directories + 36, size: 4),
        ]
        let table = optional + Tests.field(stub, coff + 16, 2)
        for index in 0..<Tests.field(stub, coff + 2, 2) {
            let header = table + 40 * index
            for (name, offset) in [
                ("VirtualSize", 8), ("VirtualAddress", 12), ("SizeOfRawData", 16), ("PointerToRawData", 20),
            ] {
                fields.append(Field(name: "section \(index) \(name)", offset: header + offset, size: 4))
            }
        }
        return fields
    }

    /// The values that break arithmetic, for a field of `size` bytes in a file of `count`.
    static func hostileValues(size: Int, count: Int) -> [Int] {
        let wide = [
            0, 1, 2, 0x28, 0x200, 0x1000, count - 1, count, count + 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_F000,
            0xFFFF_FFFF,
        ]
        return size == 2 ? [0, 1, 2, 4, 0x60, 0xF0, 0x7FFF, 0xFFFF] : wide
    }

    /// The systematic mutants of `stub`, each with what it changed.
    static func systematic(_ stub: [UInt8]) -> [(String, [UInt8])] {
        var mutants: [(String, [UInt8])] = []
        for field in fields(of: stub) where field.offset + field.size <= stub.count {
            for value in hostileValues(size: field.size, count: stub.count) {
                var mutant = stub
                Tests.put(value, field.size, at: field.offset, in: &mutant)
                mutants.append(("\(field.name) = \(value)", mutant))
            }
        }
        // Cut short inside each field, and at each section's data.
        var cuts = fields(of: stub).map { $0.offset + 1 }
        let coff = Tests.field(stub, 0x3C, 4) + 4
        let table = coff + 20 + Tests.field(stub, coff + 16, 2)
        for index in 0..<Tests.field(stub, coff + 2, 2) {
            cuts.append(Tests.field(stub, table + 40 * index + 20, 4) + 1)
        }
        for cut in Set(cuts + [0, 1, 63]).sorted() where cut < stub.count {
            mutants.append(("cut at \(cut)", Array(stub.prefix(cut))))
        }
        return mutants
    }

    /// One to four random changes of `stub`'s headers: a byte, a field set to a value that breaks
    /// arithmetic or to any value, or the file cut short.
    static func mutate(_ stub: [UInt8], _ random: inout Random) -> [UInt8] {
        var mutant = stub
        let fields = fields(of: stub).filter { $0.offset + $0.size <= stub.count }
        let sizeOfHeaders = fields.first { $0.name == "SizeOfHeaders" }.map { Tests.field(stub, $0.offset, 4) } ?? 0
        let headers = min(stub.count, max(0x400, sizeOfHeaders))
        for _ in 0...random.below(4) where !mutant.isEmpty {
            switch random.below(4) {
            case 0: mutant[random.below(min(headers, mutant.count))] = UInt8(truncatingIfNeeded: random.next())
            case 1:
                let field = fields[random.below(fields.count)]
                let values = hostileValues(size: field.size, count: mutant.count)
                if field.offset + field.size <= mutant.count {
                    Tests.put(values[random.below(values.count)], field.size, at: field.offset, in: &mutant)
                }
            case 2:
                let field = fields[random.below(fields.count)]
                if field.offset + field.size <= mutant.count {
                    Tests.put(Int(truncatingIfNeeded: random.next()), field.size, at: field.offset, in: &mutant)
                }
            default: mutant.removeLast(random.below(mutant.count))
            }
        }
        return mutant
    }

    /// What `assemble` made of `stub`, read without its code: the stub's sections and data are
    /// where they were; the sections added follow them in the table, within the headers and before
    /// the first section's data, each aligned, in order, past every section of the stub in the file
    /// and in memory, with its data where its header says; SizeOfImage covers them; no symbol
    /// table; the checksum holds. A list of what is wrong, empty when it is sound.
    static func problems(of image: [UInt8], stub: [UInt8], sections: [UnifiedKernelImage.Section]) -> [String] {
        var found: [String] = []
        func f(_ offset: Int, _ size: Int) -> Int {
            guard let value = field(image, offset, size) else {
                found.append("a field at \(offset) lies past the end (\(image.count) bytes)")
                return 0
            }
            return value
        }
        let coff = f(0x3C, 4) + 4
        let optional = coff + 20
        let table = optional + f(coff + 16, 2)
        let stubCount = Tests.field(stub, coff + 2, 2)
        let count = f(coff + 2, 2)
        guard count == stubCount + sections.count else {
            return ["\(count) sections, not \(stubCount) + \(sections.count)"]
        }
        let sectionAlignment = f(optional + 32, 4)
        let fileAlignment = f(optional + 36, 4)
        let headers = f(optional + 60, 4)
        guard sectionAlignment > 0, fileAlignment > 0 else {
            return ["alignments \(sectionAlignment) and \(fileAlignment)"]
        }
        guard found.isEmpty, table + 40 * count <= headers, headers <= image.count else {
            return found + ["the section table ends at \(table + 40 * count), past the headers' \(headers)"]
        }
        var memoryEnd = 0
        var fileEnd = headers
        for index in 0..<stubCount {
            let header = table + 40 * index
            if image[header..<header + 40] != stub[header..<header + 40] {
                found.append("section \(index)'s header changed")
            }
            let rawSize = f(header + 16, 4)
            let rawOffset = f(header + 20, 4)
            memoryEnd = max(memoryEnd, f(header + 12, 4) + max(f(header + 8, 4), rawSize))
            if rawSize > 0 {
                guard rawOffset + rawSize <= image.count else {
                    found.append("section \(index)'s data runs past the file")
                    continue
                }
                fileEnd = max(fileEnd, rawOffset + rawSize)
                if rawOffset < table + 40 * count {
                    found.append("section \(index)'s data lies under the added headers")
                }
                if image[rawOffset..<rawOffset + rawSize] != stub[rawOffset..<rawOffset + rawSize] {
                    found.append("section \(index)'s data changed")
                }
            }
        }
        for (number, section) in sections.enumerated() {
            let header = table + 40 * (stubCount + number)
            let name = String(decoding: image[header..<header + 8].prefix { $0 != 0 }, as: UTF8.self)
            let size = f(header + 8, 4)
            let address = f(header + 12, 4)
            let rawSize = f(header + 16, 4)
            let rawOffset = f(header + 20, 4)
            if name != section.name || size != section.data.count {
                found.append("added section \(number) is \(name) of \(size) bytes")
            }
            if address % sectionAlignment != 0 || rawOffset % fileAlignment != 0 {
                found.append("\(name) is not aligned")
            }
            if address < memoryEnd || rawOffset < fileEnd { found.append("\(name) overlaps what comes before it") }
            if rawSize < size || rawOffset + rawSize > image.count {
                found.append("\(name)'s data runs past the file")
            } else if Array(image[rawOffset..<rawOffset + size]) != section.data {
                found.append("\(name)'s data is not where its header says")
            }
            memoryEnd = address + size
            fileEnd = rawOffset + rawSize
        }
        let sizeOfImage = f(optional + 56, 4)
        if sizeOfImage < memoryEnd || sizeOfImage % sectionAlignment != 0 {
            found.append("SizeOfImage \(sizeOfImage) for sections ending at \(memoryEnd)")
        }
        if f(coff + 8, 4) != 0 || f(coff + 12, 4) != 0 { found.append("a symbol table stays") }
        if f(optional + 64, 4) != checksum(image, skipping: optional + 64) {
            found.append("the checksum does not hold")
        }
        return found
    }

    /// The PE checksum, summed here apart from `PortableExecutableBytes`.
    static func checksum(_ bytes: [UInt8], skipping field: Int) -> Int {
        var sum = 0
        bytes.withUnsafeBufferPointer { buffer in
            for offset in stride(from: 0, to: buffer.count, by: 2) where offset != field && offset != field + 2 {
                sum += Int(buffer[offset]) | (offset + 1 < buffer.count ? Int(buffer[offset + 1]) << 8 : 0)
                sum = (sum & 0xFFFF) + (sum >> 16)
            }
        }
        return sum + bytes.count
    }

    /// The stubs: the test's own and systemd's where they are here.
    static func stubs() throws -> [(String, [UInt8])] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        var stubs = [("the test's stub", Tests.stub())]
        for path in ["/usr/lib/systemd/boot/efi/linuxx64.efi.stub", root + "/demo/out/stub/linuxx64.efi.stub"] {
            guard FileManager.default.fileExists(atPath: path) else {
                print(
                    "UnifiedKernelImageMutationTests: \(path) skipped: it is not there (systemd-boot-efi, scripts/fetch-stub.sh)"
                )
                continue
            }
            stubs.append((path, [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))))
        }
        return stubs
    }

    @Test("every mutant of a stub is refused in one line that names it, or makes a sound PE file")
    func mutants() throws {
        let sections = Tests.sections
        for (name, stub) in try Self.stubs() {
            #expect(
                try Self.problems(
                    of: UnifiedKernelImage.assemble(stub: stub, sections: sections, shownAs: name), stub: stub,
                    sections: sections
                ).isEmpty)
            var random = Random(state: 0x5EED_0000 + UInt64(stub.count))
            let mutants =
                Self.systematic(stub) + (0..<Self.mutants).map { ("random mutant \($0)", Self.mutate(stub, &random)) }
            var refused = 0
            for (change, mutant) in mutants {
                let image: [UInt8]
                do {
                    image = try UnifiedKernelImage.assemble(stub: mutant, sections: sections, shownAs: "the stub")
                } catch let error as BootError {
                    refused += 1
                    #expect(
                        error.message.hasPrefix("the stub ") && !error.message.contains("\n")
                            && error.message.utf8.count <= 300,
                        "\(name), \(change): \(error.message)")
                    continue
                }
                let problems = Self.problems(of: image, stub: mutant, sections: sections)
                #expect(problems.isEmpty, "\(name), \(change): \(problems)")
            }
            // Most mutants break the stub; some (a checksum, a symbol table's size) do not.
            #expect(
                refused > mutants.count / 4 && refused < mutants.count,
                "\(name): \(refused) of \(mutants.count) refused")
            print(
                "UnifiedKernelImageMutationTests: \(name): \(mutants.count) mutants, \(refused) refused, the rest sound"
            )
        }
    }
}
