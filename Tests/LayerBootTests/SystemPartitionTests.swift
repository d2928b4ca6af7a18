import Foundation
import LayerBoot
import Testing

/// Where `stage` and `boot` find systemd-boot's loader.conf when `--boot-dir` is an XBOOTLDR
/// partition: systemd-boot reads it only on the ESP, which bootctl looks for at /efi and /boot/efi.
@Suite("The ESP beside an XBOOTLDR partition")
struct SystemPartitionTests {
    @Test("the boot folder's own loader.conf comes first; else the first candidate that holds one; else none")
    func find() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("layerctl-esp-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (boot, efi, bootEFI) = (root + "/boot", root + "/efi", root + "/boot/efi")
        func configure(_ folder: String) throws {
            try FileManager.default.createDirectory(atPath: folder + "/loader", withIntermediateDirectories: true)
            try Data("timeout 3\n".utf8).write(to: URL(fileURLWithPath: folder + "/loader/loader.conf"))
        }
        try FileManager.default.createDirectory(atPath: boot + "/loader/entries", withIntermediateDirectories: true)
        #expect(BootStaging.findSystemPartition(bootDirectory: boot, candidates: [efi, bootEFI]) == nil)
        try configure(bootEFI)
        #expect(BootStaging.findSystemPartition(bootDirectory: boot, candidates: [efi, bootEFI]) == bootEFI)
        try configure(efi)
        #expect(BootStaging.findSystemPartition(bootDirectory: boot, candidates: [efi, bootEFI]) == efi)
        // The boot folder itself is no other partition, however it is spelled.
        #expect(BootStaging.findSystemPartition(bootDirectory: efi + "/", candidates: [efi]) == nil)
        try configure(boot)
        #expect(BootStaging.findSystemPartition(bootDirectory: boot, candidates: [efi, bootEFI]) == nil)
    }
}
