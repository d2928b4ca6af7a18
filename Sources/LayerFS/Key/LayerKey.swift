import Alpm
import Crypto
import Foundation

/// The parsed content of a layer that decides its tree, in a canonical form: comments, key order,
/// whitespace, the order of `packages:` and of `files:` do not count; the order of `run:` does.
/// Descriptions and repository servers are left out: they change no byte of the tree.
public struct LayerSpec: Codable, Sendable, Hashable {
    /// Bumped whenever the builder would make a different tree from the same inputs.
    public static let formatVersion = 1

    public var format = LayerSpec.formatVersion
    public var arch: String
    public var packages: [String]
    public var remove: [String]
    public var files: [FileEntry]
    public var run: [String]
    public var env: [EnvVariable]
    public var sourceDateEpoch: Int64
    /// `boot:` and the digest of the hook files it installs; absent (and so not in the key at all)
    /// for layers without boot support.
    public var boot: String?
    public var bootFiles: String?

    public init(
        arch: String, packages: [String], remove: [String], files: [FileEntry], run: [String], env: [EnvVariable],
        sourceDateEpoch: Int64, boot: BootFlavour? = nil
    ) {
        self.boot = boot?.rawValue
        self.bootFiles = boot?.filesDigest
        self.arch = arch
        self.packages = packages
        self.remove = remove
        self.files = files
        self.run = run
        self.env = env
        self.sourceDateEpoch = sourceDateEpoch
    }

    public struct FileEntry: Codable, Sendable, Hashable {
        public var path: String
        public var mode: UInt32
        public var owner: String
        /// sha256 of the bytes written: the inline content or the source file.
        public var sha256: String
    }

    /// The digest of this spec alone.
    public var digest: String { Digest.sha256(LayerKey.canonical(self)) }
}

/// A package file as the key sees it: what the transaction resolved to.
public struct ResolvedPackage: Codable, Sendable, Hashable {
    public var name: String
    public var version: String
    public var sha256: String

    public init(_ file: PackageFile) {
        name = file.name
        version = file.version
        sha256 = file.sha256
    }
}

/// `key = sha256(canonical encoding of: format version, parent key or "scratch", the spec, and
/// the exact package files its transaction resolves to)`.
public enum LayerKey {
    struct Input: Encodable {
        var parent: String
        var spec: LayerSpec
        var packageFiles: [ResolvedPackage]
    }

    public static func compute(parent: String?, spec: LayerSpec, resolved: [PackageFile]) -> String {
        let input = Input(
            parent: parent ?? "scratch", spec: spec,
            packageFiles: resolved.map(ResolvedPackage.init).sorted { $0.name < $1.name })
        return Digest.sha256(canonical(input))
    }

    static func canonical<T: Encodable>(_ value: T) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Every field is a string, number or array of them: encoding cannot fail.
        return (try? encoder.encode(value)) ?? Data()
    }
}

/// sha256 in lower-case hex.
enum Digest {
    static func sha256(_ data: Data) -> String { hex(SHA256.hash(data: data)) }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        for byte in digest {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Streams a file through sha256.
    static func sha256(file path: String) throws -> String { try sha256(file: Array(path.utf8)) }

    /// sha256 of a file's contents, named by raw bytes.
    static func sha256(file path: [UInt8]) throws -> String { try contentHash(file: path).hex }

    /// A buffer for reading files to digest, reused from one file to the next by one thread.
    final class ReadBuffer {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        deinit { bytes.deallocate() }
    }

    /// sha256 of a file's contents, as a value.
    static func contentHash(file path: [UInt8], buffer: ReadBuffer = ReadBuffer()) throws -> Hash256 {
        let fd = RawPath.with(path) { open($0, O_RDONLY | O_CLOEXEC) }
        if fd < 0 { throw SystemError("read", RawPath.string(path)) }
        defer { close(fd) }
        var hasher = SHA256()
        let buffer = buffer.bytes
        while true {
            let count = read(fd, buffer.baseAddress, buffer.count)
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw SystemError("read", RawPath.string(path)) }
            if count == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
        return Hash256(hasher.finalize())
    }
}
