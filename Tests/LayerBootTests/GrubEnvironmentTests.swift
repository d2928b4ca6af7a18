import LayerBoot
import Testing

/// GRUB's environment block as grub-editenv writes it: a header line, `name=value` lines, and `#`
/// up to exactly 1024 bytes.
@Suite("GRUB environment block")
struct GrubEnvironmentTests {
    @Test("a new block; a value set again moves to the end and the others stay; a block too full is refused")
    func block() throws {
        let fresh = try BootEntries.grubEnvironment(nil, setting: "saved_entry", to: "layerctl-gaming")
        #expect(fresh.count == 1024)
        let written = Array("# GRUB Environment Block\nsaved_entry=layerctl-gaming\n".utf8)
        #expect(Array(fresh.prefix(written.count)) == written)
        #expect(fresh.dropFirst(written.count).allSatisfy { $0 == UInt8(ascii: "#") })
        let both = try BootEntries.grubEnvironment(fresh, setting: "next_entry", to: "layerctl-base")
        let replaced = try BootEntries.grubEnvironment(both, setting: "saved_entry", to: "layerctl-dev")
        let lines = String(decoding: replaced, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines == ["next_entry=layerctl-base", "saved_entry=layerctl-dev"])
        #expect(replaced.count == 1024)
        #expect(throws: (any Error).self) {
            try BootEntries.grubEnvironment(nil, setting: "saved_entry", to: String(repeating: "x", count: 1000))
        }
    }
}
