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

    /// A zstd blob of a few kilobytes that unpacks to `bytes` of zeros, and one of `files` files.
    static func bombs(in work: String, bytes: Int64, files: Int) throws -> (space: String, inodes: String) {
        let space = work + "/space.tar.zst"
        try OCILayerTests.craft([OCILayerTests.Crafted(name: "zeros", zeros: bytes)], at: space, zstd: true)
        let inodes = work + "/inodes.tar.zst"
        try OCILayerTests.craft((0..<files).map { OCILayerTests.Crafted(name: "f\($0)") }, at: inodes, zstd: true)
        for blob in [space, inodes] {
            let size = try #require(try FileManager.default.attributesOfItem(atPath: blob)[.size] as? Int)
            #expect(size < 1 << 20, "\(blob): \(size) bytes")
        }
        return (space, inodes)
    }

    @Test("a blob of a few kilobytes that unpacks to more bytes or files than the disk holds stops at the reserve")
    func unpack() throws {
        let work = try Harness.temporaryDirectory("bombs")
        let blobs = try Self.bombs(in: work, bytes: 256 << 20, files: 5000)
        let disk = try KernelMount.tmpfs(size: "64m", inodes: 4000)
        defer { KernelMount.unmount(disk) }
        let before = Self.free(disk)
        for (blob, left) in [(blobs.space, "MiB free"), (blobs.inodes, "inodes free")] {
            #expect {
                try OCILayerReader(blob: blob).unpack(into: disk + "/tree")
            } throws: { error in
                let text = "\(error)"
                return text.hasPrefix("unpacking the layer blob \(blob) stopped: the filesystem mounted at \(disk) is down to")
                    && text.contains(left)
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
        for (index, blob) in [blobs.space, blobs.inodes].enumerated() {
            let reference = try ImageReference(parsing: "\(registry.host)/steve/bomb:\(index)")
            try ShareTests.pushImage(layers: [blob], to: reference)
            let before = Self.free(disk)
            let pulled = try Harness.run(["pull", reference.description, "--store", store])
            #expect(pulled.status == 8, "\(pulled.stderr)")
            let errors = pulled.stderr.split(separator: "\n").filter { $0.hasPrefix("layerctl:") }
            #expect(errors.count == 1 && pulled.stderr.contains("stopped: the filesystem mounted at \(disk) is down to"), "\(pulled.stderr)")
            #expect(try Store(root: store).keys().isEmpty)
            #expect(try FileManager.default.contentsOfDirectory(atPath: store + "/tmp").isEmpty)
            let after = Self.free(disk)
            #expect(after.bytes + (1 << 20) >= before.bytes && after.inodes + 16 >= before.inodes, "\(before) → \(after)")
        }
    }
}
