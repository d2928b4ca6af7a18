import Glibc
import LayerSupport

extension Store {
    /// Fails, naming the store's filesystem, when it cannot hold a layer's tree. A tree is an
    /// overlay upper directory: overlayfs marks a folder that replaces one below as opaque with the
    /// attribute `trusted.overlay.opaque`, and a deleted name with a 0:0 character device. On a
    /// filesystem without trusted.* attributes (ramfs, vfat, exFAT, some FUSE and network
    /// filesystems) a root layer still builds, and the first `rm -rf` of a folder below fails with
    /// EIO inside a `run:` command: this says why before anything is built or pulled.
    ///
    /// Probes inside `directory`, a fresh folder of the store's `tmp/` (`makeTemporary`).
    public func requireTreeFileSystem(in directory: String) throws {
        let probe = directory + "/.tree-probe"
        _ = try sys("make", probe) { mkdir(probe, 0o700) }
        defer { rmdir(probe) }
        do {
            try ExtendedAttributes.set(probe, "trusted.overlay.opaque", Array("y".utf8))
        } catch let error as SystemError {
            throw StoreError.unsuitableFileSystem(
                root, type: fileSystemType(), lacks: "the attribute trusted.overlay.opaque of an opaque folder",
                errno: error.errno)
        }
        let whiteout = probe + "/whiteout"
        if mknod(whiteout, S_IFCHR | 0o600, 0) != 0 {
            let refusal = errno  // before the mount table is read, which sets errno
            throw StoreError.unsuitableFileSystem(
                root, type: fileSystemType(), lacks: "the 0:0 character device of a deleted name", errno: refusal)
        }
        unlink(whiteout)
    }

    private func fileSystemType() -> String {
        (try? MountTable().mount(holding: tmpDirectory).fstype).flatMap { $0.isEmpty ? nil : $0 } ?? "a filesystem"
    }
}
