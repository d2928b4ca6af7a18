import Foundation
import Glibc
import LayerSupport

/// A lower layer's opaque folders as a file that a confined unpack searches without reading it
/// whole. A pull hands each unpack every layer below it, and an image may have 256 layers of a
/// million opaque folders each: a list decoded whole for every layer above made a pull's work
/// grow with the square of its layers. Each layer's file is written once a pull, and a lookup
/// maps it and reads about log2(count) of its paths.
///
/// Layout, integers little-endian: the magic `layerctl opaque 1\n` padded with NUL to 24 bytes;
/// the count (8 bytes); the offset of each path in the file (8 bytes each); the paths, sorted by
/// their bytes, without duplicates, each relative to the layer's tree ([] for its root).
package final class OpaqueFolderIndex: @unchecked Sendable {
    static let magic: [UInt8] = Array("layerctl opaque 1\n".utf8) + [UInt8](repeating: 0, count: 6)
    static let header = magic.count + 8

    /// Writes `folders` as an index at `path`, readable by anyone.
    package static func write(_ folders: [[UInt8]], to path: String) throws {
        let sorted = Array(Set(folders)).sorted { $0.lexicographicallyPrecedes($1) }
        var bytes = magic
        func append(_ value: Int) { withUnsafeBytes(of: UInt64(value).littleEndian) { bytes.append(contentsOf: $0) } }
        append(sorted.count)
        var offset = header + 8 * sorted.count
        for folder in sorted {
            append(offset)
            offset += folder.count
        }
        for folder in sorted { bytes.append(contentsOf: folder) }
        try FileSystem.writeFile(Data(bytes), to: path)
    }

    private let base: UnsafeRawPointer
    private let size: Int
    /// How many paths it holds.
    package let count: Int

    /// Maps the index at `path`, and checks that its table lies inside the file.
    package init(path: String) throws {
        let fd = try sys("open", path) { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(fd) }
        var st = stat()
        try sys("stat", path) { fstat(fd, &st) }
        let size = Int(st.st_size)
        guard st.st_mode & S_IFMT == S_IFREG, size >= Self.header else { throw Self.damaged(path) }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw SystemError("map", path)
        }
        let base = UnsafeRawPointer(mapped)
        let count =
            Int(exactly: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: Self.magic.count, as: UInt64.self)))
            ?? -1
        guard memcmp(base, Self.magic, Self.magic.count) == 0, count >= 0, count <= (size - Self.header) / 8 else {
            munmap(mapped, size)
            throw Self.damaged(path)
        }
        self.base = base
        self.size = size
        self.count = count
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), size) }

    private static func damaged(_ path: String) -> SystemError {
        SystemError("read the opaque folder index", path, errno: EINVAL)
    }

    /// The bytes of path `index`; empty where the table points outside the file (the writer never
    /// does).
    private func path(_ index: Int) -> UnsafeRawBufferPointer {
        func offset(_ index: Int) -> Int {
            Int(
                exactly: UInt64(
                    littleEndian: base.loadUnaligned(fromByteOffset: Self.header + 8 * index, as: UInt64.self))) ?? size
        }
        let start = offset(index)
        let end = index + 1 < count ? offset(index + 1) : size
        guard start <= end, end <= size else { return UnsafeRawBufferPointer(start: base, count: 0) }
        return UnsafeRawBufferPointer(start: base + start, count: end - start)
    }

    /// Whether `folder` is one of the index's paths.
    package func contains(_ folder: [UInt8]) -> Bool {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            let candidate = path(middle)
            if candidate.elementsEqual(folder) { return true }
            if candidate.lexicographicallyPrecedes(folder) { low = middle + 1 } else { high = middle }
        }
        return false
    }
}
