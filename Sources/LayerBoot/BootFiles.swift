import LayerEntries
import LayerSupport
import SquashfsImage

/// The kernel and initramfs a boot loader starts, found by name in an image's /boot.
public enum BootFiles {
    /// The first kernel (`vmlinuz-*`, in byte order) with an initramfs named as Arch and dracut
    /// name it (initramfs-NAME.img) or Debian does (initrd.img-NAME); a fallback image only when
    /// there is no other. `names` are those of /boot's entries that are not folders.
    static func choose(from names: Set<String>) -> (kernel: String, initrd: String)? {
        for kernel in names.sorted() where kernel.hasPrefix("vmlinuz-") {
            let name = String(kernel.dropFirst("vmlinuz-".count))
            for initrd in ["initramfs-\(name).img", "initrd.img-\(name)", "initramfs-\(name)-fallback.img"]
            where names.contains(initrd) {
                return ("/boot/" + kernel, "/boot/" + initrd)
            }
        }
        return nil
    }

    /// Whether the merged stack `tree` has no kernel and initramfs to boot, for certain: told from
    /// the layers' manifests before an export of minutes writes an image that `stage` or `vm` could
    /// only refuse. A /boot that is a symlink is left to the image's reader, which follows it.
    public static func certainlyMissing(in tree: MergedTree) -> Bool {
        guard let boot = tree.entry(at: "/boot") else { return true }
        guard tree.entries[boot].kind == .directory else { return tree.entries[boot].kind != .symlink }
        let names = tree.entries[boot].children.filter { tree.entries[$0].kind != .directory }
            .map { RawPath.string(tree.entries[$0].name) }
        return choose(from: Set(names)) == nil
    }
}

extension SquashfsReader {
    /// The kernel and initramfs in the image's /boot (`BootFiles.choose`).
    public func bootFiles() throws -> (kernel: String, initrd: String)? {
        guard try exists("/boot") else { return nil }
        return BootFiles.choose(
            from: Set(try list("/boot").filter { $0.kind != .directory }.map { RawPath.string($0.name) }))
    }
}
