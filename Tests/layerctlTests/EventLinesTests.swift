import Foundation
import Glibc
import LayerShare
import LayerSupport
import Testing

@testable import LayerBuilder

/// The parent's reading of a work's events (`NamespacedWork.EventLines`), which a confined child
/// writes after parsing strangers' data: an unpack's answer holds an attribute for each opaque
/// folder of a blob, and may run to tens of megabytes in one line.
@Suite("Event lines")
struct EventLinesTests {
    /// Writes `chunks` to a socket, one send each, from a thread of its own, and reads them back
    /// as events. A socket, as the work's stdin is one: a reader that gave up is EPIPE to the
    /// writer, not SIGPIPE.
    static func read(_ chunks: [Data]) throws -> (events: [BuildEvent], error: (any Error)?) {
        let (readEnd, writeEnd) = try makeSocketPair("events")
        let writer = Thread {
            defer { close(writeEnd) }
            for chunk in chunks {
                let sent = chunk.withUnsafeBytes { bytes in
                    var done = 0
                    while done < bytes.count {
                        let wrote = send(writeEnd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
                        if wrote <= 0 { return false }
                        done += wrote
                    }
                    return true
                }
                if !sent { return }
            }
        }
        writer.start()
        var lines = NamespacedWork.EventLines(role: .unpack, descriptor: readEnd)
        var events: [BuildEvent] = []
        do {
            while let event = try lines.next() { events.append(event) }
        } catch {
            return (events, error)
        }
        return (events, nil)
    }

    @Test(
        "a line of megabytes written in small pieces, lines that share a write, a newline at either end of a write, a line that is no event"
    )
    func shapes() throws {
        var long = BuildEvent(.finished, layer: "")
        long.attributes = (0..<60_000).map {
            DeferredAttribute(
                path: Array("folder/\($0)".utf8), name: Array("trusted.overlay.opaque".utf8), value: Array("y".utf8))
        }
        let longLine = try JSONEncoder().encode(long) + Data([0x0A])
        #expect(longLine.count > 4 << 20)
        let small = try JSONEncoder().encode(BuildEvent(.step, layer: "a", message: "one")) + Data([0x0A])
        let other = try JSONEncoder().encode(BuildEvent(.step, layer: "b", message: "two")) + Data([0x0A])
        // The long line in pieces of 4 KiB (its newline alone in the last), two lines in one write,
        // a write that ends just before a newline and one that starts with it, and a line of no event.
        var chunks = stride(from: 0, to: longLine.count - 1, by: 4096).map {
            longLine[$0..<min($0 + 4096, longLine.count - 1)]
        }
        chunks.append(Data([0x0A]))
        chunks.append(small + other)
        chunks.append(small.dropLast())
        chunks.append(Data([0x0A]) + Data("not an event\n".utf8) + other.prefix(3))
        chunks.append(other.dropFirst(3))
        let (events, error) = try Self.read(chunks.map { Data($0) })
        #expect(error == nil)
        #expect(events.map(\.kind) == [.finished, .step, .step, .step, .step])
        #expect(events.first?.attributes?.count == 60_000)
        #expect(events.first?.attributes?.last?.path == Array("folder/59999".utf8))
        #expect(events.dropFirst().map { $0.message ?? "" } == ["one", "two", "one", "two"])
    }

    @Test("a line longer than the longest event is an error once it passes the limit, not this process's memory")
    func tooLong() throws {
        let piece = Data(repeating: 0x20, count: 1 << 20)
        let chunks =
            [Data("{\"kind\":\"step\",\"layer\":\"".utf8)]
            + Array(repeating: piece, count: NamespacedWork.longestEvent / piece.count + 2)
        let (events, error) = try Self.read(chunks)
        #expect(events.isEmpty)
        #expect("\(error.map { "\($0)" } ?? "")".contains("the unpack work sent an event of more than 64.0 MiB"))
        // An unpack's answer is as long as the blob it unpacked makes it: the blob's fault, exit 3.
        #expect((error as? BuildFailure)?.code == .input)
    }
}
