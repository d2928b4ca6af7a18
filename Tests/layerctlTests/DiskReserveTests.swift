import Foundation
import Glibc
import LayerShare
import LayerStore
import LayerSupport
@testable import RegistryClient
import Testing

/// A layer file's steps and a stranger's blob cannot fill the disk that holds the store: a build
/// or a pull stops while 5% of the filesystem's space and inodes are still free (at most 1 GiB and
/// 65,536), in one line, and what it wrote goes. Each disk here is a small tmpfs, whose reserve is
/// its 5%.
@Suite("Disk reserve", .serialized, .enabled(if: Harness.canBuild, Harness.cannotBuildReason))
struct DiskReserveTests {
    /// Free bytes and inodes of the filesystem at `path`, as an unprivileged process sees them.
    static func free(_ path: String) -> (bytes: UInt64, inodes: UInt64) {
        var fs = statvfs()
        #expect(statvfs(path, &fs) == 0)
        return (UInt64(fs.f_bavail) * UInt64(fs.f_frsize), UInt64(fs.f_favail))
    }

    @Test("a run: step that fills the store's disk with bytes or with files is stopped at the reserve, and nothing of it stays")
    func build() throws {
        let disk = try KernelMount.tmpfs(size: "256m", inodes: 20_000)
        defer { KernelMount.unmount(disk) }
        let layers = try Harness.demoLayers()
        let store = disk + "/store"
        let base = try Harness.run(["build", layers + "/base.yaml", "--store", store])
        try #require(base.status == 0, "\(base.stderr)")
        let before = Self.free(disk)
        let cases: [(command: String, says: [String])] = [
            // Caught while the step runs: the build is killed, at the run: line.
            ("dd if=/dev/zero of=/big bs=1M count=1000 2>/dev/null || true; sleep 30",
             ["probe.yaml:3:5: layer probe was stopped, with everything it ran (at: run 1 `dd", " free, and layerctl leaves the last 12.8 MiB"]),
            // A step that ends at once: caught when the steps are done, or by the watch if the
            // build's child was still at work when it looked (four times a second; a loaded
            // machine takes longer than that to tear the build down). Either is one line.
            ("dd if=/dev/zero of=/big bs=1M count=1000 2>/dev/null || true",
             ["probe.yaml", "layer probe", "stopped", "the filesystem mounted at \(disk) is down to", "12.8 MiB"]),
            // Inodes, not bytes.
            ("mkdir /d && cd /d && seq 1 30000 | xargs touch 2>/dev/null; sleep 30",
             ["probe.yaml:3:5: layer probe was stopped", "inodes free", "the last 1000 inodes"]),
        ]
        for (command, says) in cases {
            try "from: base\nrun:\n  - '\(command)'\n".write(toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
            let started = Date()
            let result = try Harness.run(["build", layers + "/probe.yaml", "--store", store, "--timeout", "60"])
            #expect(result.status == 8, "\(command): \(result.stderr)")
            #expect(Date().timeIntervalSince(started) < 25, "\(command): stopped by the reserve, not by its own end")
            let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
            #expect(errors.count == 1, "\(result.stderr)")
            for phrase in says { #expect(result.stderr.contains(phrase), "\(command): \(phrase) in \(result.stderr)") }
            #expect(try Store(root: store).ref("probe") == nil)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
            #expect(try Harness.leakedMounts(under: store).isEmpty)
            let after = Self.free(disk)
            #expect(after.bytes + (1 << 20) >= before.bytes && after.inodes + 16 >= before.inodes, "\(command): \(before) → \(after)")
            try Harness.expectValidStore(store)
        }
        // Under the reserve's line, a layer builds as ever.
        try "from: base\nrun:\n  - dd if=/dev/zero of=/some bs=1M count=100\n".write(
            toFile: layers + "/probe.yaml", atomically: false, encoding: .utf8)
        let fits = try Harness.run(["build", layers + "/probe.yaml", "--store", store])
        #expect(fits.status == 0, "\(fits.stderr)")
    }

    /// Zstd blobs of a few kilobytes that unpack to `bytes` of the letter A, to as many zeros
    /// (which the unpack leaves as holes), and to `files` files.
    static func bombs(in work: String, bytes: Int64, files: Int) throws -> (space: String, zeros: String, inodes: String) {
        let space = work + "/space.tar.zst"
        try OCILayerTests.craft([OCILayerTests.Crafted(name: "letters", zeros: bytes, fill: 0x41)], at: space, zstd: true)
        let zeros = work + "/zeros.tar.zst"
        try OCILayerTests.craft([OCILayerTests.Crafted(name: "zeros", zeros: bytes)], at: zeros, zstd: true)
        let inodes = work + "/inodes.tar.zst"
        try OCILayerTests.craft((0..<files).map { OCILayerTests.Crafted(name: "f\($0)") }, at: inodes, zstd: true)
        for blob in [space, zeros, inodes] {
            let size = try #require(try FileManager.default.attributesOfItem(atPath: blob)[.size] as? Int)
            #expect(size < 1 << 20, "\(blob): \(size) bytes")
        }
        return (space, zeros, inodes)
    }

    /// What the unpack of each of `bombs`'s blobs says when it stops.
    static func stops(_ blobs: (space: String, zeros: String, inodes: String), disk: String) -> [(String, [String])] {
        let full = "stopped: the filesystem mounted at \(disk) is down to"
        return [
            (blobs.space, [full, "MiB free"]),
            (blobs.zeros, ["stopped: its files hold ", " of zeros, kept as holes, and written out they would not fit in the ",
                           " free on the filesystem mounted at \(disk), where layerctl leaves the last "]),
            (blobs.inodes, [full, "inodes free"]),
        ]
    }

    @Test("a blob of a few kilobytes that unpacks to more bytes or files than the disk holds stops at the reserve")
    func unpack() throws {
        let work = try Harness.temporaryDirectory("bombs")
        let blobs = try Self.bombs(in: work, bytes: 256 << 20, files: 5000)
        let disk = try KernelMount.tmpfs(size: "64m", inodes: 4000)
        defer { KernelMount.unmount(disk) }
        let before = Self.free(disk)
        for (blob, says) in Self.stops(blobs, disk: disk) {
            #expect {
                try OCILayerReader(blob: blob).unpack(into: disk + "/tree")
            } throws: { error in
                let text = "\(error)"
                return text.hasPrefix("unpacking the layer blob \(blob) stopped: ") && says.allSatisfy(text.contains)
            }
            #expect(!FileManager.default.fileExists(atPath: disk + "/tree"))
            #expect(Self.free(disk) == before)
        }
    }

    @Test("pulling such a blob fails in one line, and the store keeps nothing of it",
          .enabled(if: RegistryServer.available, RegistryServer.unavailableReason))
    func pull() throws {
        let registry = try RegistryServer()
        defer { registry.stop() }
        let work = try Harness.temporaryDirectory("bombs")
        let blobs = try Self.bombs(in: work, bytes: 256 << 20, files: 5000)
        let disk = try KernelMount.tmpfs(size: "64m", inodes: 4000)
        defer { KernelMount.unmount(disk) }
        let store = disk + "/store"
        for (index, (blob, says)) in Self.stops(blobs, disk: disk).enumerated() {
            let reference = try ImageReference(parsing: "\(registry.host)/steve/bomb:\(index)")
            try ShareTests.pushImage(layers: [blob], to: reference)
            let before = Self.free(disk)
            let pulled = try Harness.run(["pull", reference.description, "--store", store])
            #expect(pulled.status == 8, "\(pulled.stderr)")
            let errors = pulled.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
            #expect(errors.count == 1 && says.allSatisfy(pulled.stderr.contains), "\(pulled.stderr)")
            #expect(try Store(root: store).keys().isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
            let after = Self.free(disk)
            #expect(after.bytes + (1 << 20) >= before.bytes && after.inodes + 16 >= before.inodes, "\(before) → \(after)")
        }
    }
}
