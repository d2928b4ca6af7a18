import Foundation
import Glibc
import LayerSupport

/// Where a layer blob's tar is parsed: a process that cannot reach the host (`LayerBuilder`'s
/// `TarUnpackWork`), which reads the plain tar from a socket and unpacks it into a folder.
package protocol TarUnpacker: Sendable {
    /// Starts unpacking, into the empty folder `tree`, the plain tar that is written to the
    /// returned unpack's `input`. `lower` are the trees below, topmost first; `scratch` is a
    /// folder of the pull's for the unpack's own use; `name` names the blob in messages.
    func start(tree: String, lower: [LowerTree], scratch: String, name: String) throws -> any TarUnpack
}

/// One unpack under way.
package protocol TarUnpack: AnyObject {
    /// Where the tar is written; `endInput` closes it.
    var input: Int32 { get }
    /// The tar is whole, or will not be: the unpack sees its end.
    func endInput()
    /// Waits for the unpack to end and returns the attributes it left to this process
    /// (`DeferredAttribute`); throws what it stopped with.
    func wait() throws -> [DeferredAttribute]
    /// Ends the unpack at once, wherever it is.
    func stop()
}

/// Unpacks a layer blob while it downloads: the download writes each chunk into one end of a
/// socket pair (blocking, so a slow unpack slows the download, and memory stays one buffer); a
/// thread of its own reads the other end, decompresses it and takes the diff_id, and hands the
/// plain tar to a `TarUnpack`, which parses it somewhere the host is out of reach. The blob is
/// never stored, and its decompression, unpacking and writing overlap the transfer. `abandon()`
/// (a failed attempt, a digest that does not match) ends both and removes what was unpacked.
final class StreamedUnpack: @unchecked Sendable {
    // @unchecked: `writer` is used by the downloading thread only; `diffID` is written by the
    // decompressing thread before it signals `done`, and read after `done` is waited for.
    private let writer: Int32
    private let reader: Int32
    private let tree: String
    private let name: String
    private let unpack: any TarUnpack
    private let done = DispatchSemaphore(value: 0)
    private var diffID: Result<String, any Error>?
    private var outcome: Result<[DeferredAttribute], any Error>?
    private var closed = false
    private var joined = false
    /// The unpacking stopped reading: the download stopped on its account.
    private var refused = false

    /// Starts unpacking into `tree` (which must not exist) what `write` will be given.
    init(into tree: String, lower: [LowerTree], scratch: String, name: String, unpacker: any TarUnpacker) throws {
        try OCILayerReader.makeRoot(tree)
        (writer, reader) = try makeSocketPair(tree)
        self.tree = tree
        self.name = name
        do {
            unpack = try unpacker.start(tree: tree, lower: lower, scratch: scratch, name: name)
        } catch {
            close(writer)
            close(reader)
            try? FileSystem.removeTree(tree)
            throw error
        }
        let thread = Thread { [self] in
            diffID = Result { try OCILayerReader(stream: reader, name: name).decompress(into: unpack.input) }
            unpack.endInput()
            // The writer must not wait for a reader that stopped (a hostile entry): it gets EPIPE.
            shutdown(reader, Int32(SHUT_RDWR))
            done.signal()
        }
        thread.stackSize = 1 << 22
        thread.start()
    }

    deinit {
        join()
        close(reader)
    }

    /// Passes downloaded bytes on; an error when the unpacking stopped (its own error comes from
    /// `finish`).
    func write(_ bytes: UnsafeRawBufferPointer) -> (any Error)? {
        var offset = 0
        while offset < bytes.count {
            let sent = send(writer, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if sent < 0 && errno == EINTR { continue }
            if sent <= 0 {
                refused = true
                return SystemError("pass the download on to the unpacking of", tree)
            }
            offset += sent
        }
        return nil
    }

    /// The end of the blob: waits for the unpacking, sets the attributes it left, and returns
    /// the diff_id. The files' digests are not the unpack's to give: the scan takes them.
    func finish() throws -> String {
        join()
        if let cause = decompressionFailure { throw cause }
        let attributes = try outcome!.get()
        guard let diffID else { throw SystemError("unpack into", tree, errno: EIO) }
        try DeferredAttribute.apply(attributes, in: tree, blob: name)
        return try diffID.get()
    }

    /// Why the decompression stopped, unless it was because the unpack stopped reading: then
    /// the unpack's own error says why, and otherwise the unpack only saw the tar end early.
    private var decompressionFailure: (any Error)? {
        if case .failure(let error) = diffID, !(error is OCILayerReader.OutputClosed) { return error }
        return nil
    }

    /// The error the unpacking stopped with, when the download failed on its account; nil when the
    /// download failed of itself (the unpacking then only saw the blob end early).
    func stoppedWith() -> (any Error)? {
        join()
        guard refused else { return nil }
        if let cause = decompressionFailure { return cause }
        if case .failure(let error) = outcome { return error }
        return nil
    }

    /// Gives up: the unpacking ends, and what it made is removed. It is not waited for to see
    /// the blob end: a stalled download may be stalled on it.
    func abandon() {
        unpack.stop()
        join()
        try? FileSystem.removeTree(tree)
    }

    /// Ends the blob and waits for the decompressing thread and the unpack, once.
    private func join() {
        if !closed {
            closed = true
            close(writer)
        }
        if !joined {
            joined = true
            done.wait()
            outcome = Result { try unpack.wait() }
        }
    }
}
