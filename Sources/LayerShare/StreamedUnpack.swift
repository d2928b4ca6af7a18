import Foundation
import Glibc
import LayerSupport

/// Unpacks a layer blob while it downloads: the download writes each chunk into one end of a
/// socket pair (blocking, so a slow unpack slows the download, and memory stays one buffer); a
/// thread of its own reads the other end with `OCILayerReader`. The blob is never stored, and its
/// decompression, hashing and writing overlap the transfer. `abandon()` (a failed attempt, a
/// digest that does not match) ends the thread and removes what it unpacked.
final class StreamedUnpack: @unchecked Sendable {
    // @unchecked: `writer` is used by the downloading thread only; `result` is written by the
    // unpacking thread before it signals `done`, and read after `done` is waited for.
    private let writer: Int32
    private let reader: Int32
    private let tree: String
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<OCILayerReader.Unpacked, any Error>?
    private var closed = false
    private var joined = false
    /// The unpacking stopped reading: the download stopped on its account.
    private var refused = false

    /// Starts unpacking into `tree` (which must not exist) what `write` will be given, taking the
    /// digests of `blockSize` blocks of its files when that is given.
    init(into tree: String, lower: [String], name: String, blockSize: Int? = nil) throws {
        var pair: [Int32] = [-1, -1]
        try sys("make a socket pair for", tree) { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) }
        writer = pair[0]
        reader = pair[1]
        self.tree = tree
        let thread = Thread { [self] in
            result = Result {
                try OCILayerReader(stream: reader, name: name).unpackHashing(into: tree, lower: lower, blockSize: blockSize)
            }
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

    /// The end of the blob: waits for the unpacking, and returns its diff_id and digests.
    func finish() throws -> OCILayerReader.Unpacked {
        join()
        guard let result else { throw SystemError("unpack into", tree, errno: EIO) }
        return try result.get()
    }

    /// The error the unpacking stopped with, when the download failed on its account; nil when the
    /// download failed of itself (the unpacking then only saw the blob end early).
    func stoppedWith() -> (any Error)? {
        join()
        if refused, case .failure(let error) = result { return error }
        return nil
    }

    /// Gives up: the unpacking sees the blob end early, and what it made is removed.
    func abandon() {
        join()
        try? FileSystem.removeTree(tree)
    }

    /// Ends the blob and waits for the unpacking thread, once.
    private func join() {
        if !closed {
            closed = true
            close(writer)
        }
        if !joined {
            joined = true
            done.wait()
        }
    }
}
