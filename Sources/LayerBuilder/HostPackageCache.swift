import Alpm
import Foundation
import Glibc
import LayerSupport

/// pacman's package cache on the host (`/var/cache/pacman/pkg`, or `--host-cache`), which a build
/// takes the packages it installs from before it downloads them, as `pacstrap -c` does: on an Arch
/// host, the packages pacman fetched already.
///
/// Read, never written. A package is copied, not linked, into the layer's own fetch cache (the
/// downloads' child, which has the network, may write what it is given there), and kept only when
/// its size and sha256 are those its database gives: a file there that differs, or that is no
/// file (a link, a FIFO), costs a download and changes nothing. Its `.sig` comes with it, as
/// pacman keeps one beside each package it downloads: libalpm 6.0 downloads a package again,
/// cached or not, when its repository's `siglevel` checks packages and the `.sig` is not cached.
/// libalpm then checks the copies as it checks a download, signature included.
public struct HostPackageCache: Sendable, Equatable {
    public let folder: String

    /// pacman's own `CacheDir`.
    public static let pacmans = "/var/cache/pacman/pkg"

    public init(folder: String) {
        self.folder = folder
    }

    /// Copies into the folder `cache` each of `packages` that this cache holds as its database
    /// gives it; returns those copied.
    func copy(_ packages: [PackageFile], into cache: String) -> [PackageFile] {
        packages.filter { package in
            let name = package.filename
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix("."), package.downloadSize > 0 else { return false }
            guard copy(name, into: cache, size: { $0 == package.downloadSize }, sha256: package.sha256.lowercased()) else { return false }
            _ = copy(name + ".sig", into: cache, size: { $0 <= Self.largestSignature }, sha256: nil)
            return true
        }
    }

    /// An OpenPGP signature of a package is a few hundred bytes.
    static let largestSignature: Int64 = 64 << 10

    /// Copies the file `name` into `cache` when it is a regular file whose size passes `size`
    /// and, when given, whose sha256 is `sha256`; whether it did.
    private func copy(_ name: String, into cache: String, size: (Int64) -> Bool, sha256: String?) -> Bool {
        let source = folder + "/" + name
        // Not through a link, and no wait on a FIFO.
        let input = open(source, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard input >= 0 else { return false }
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, st.st_mode & S_IFMT == S_IFREG, size(Int64(st.st_size)) else { return false }
        let target = cache + "/" + name
        guard let (output, temporary) = try? FileSystem.createTemporary(beside: target, mode: 0o644) else { return false }
        do {
            defer { close(output) }
            try FileSystem.copyData(from: input, source, to: output, temporary)
            if let sha256, try Digest.sha256(file: temporary) != sha256 {
                unlink(temporary)
                return false
            }
            try sys("rename", target) { rename(temporary, target) }
            return true
        } catch {
            unlink(temporary)
            return false
        }
    }
}
