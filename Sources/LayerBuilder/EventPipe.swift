import Foundation
import Glibc

/// The builder child's side of the event pipe: one JSON object per line on
/// `NamespacedWork.eventDescriptor`.
struct EventPipe: Sendable {
    let layer: String
    private var fd: Int32 { NamespacedWork.eventDescriptor }

    func send(_ event: BuildEvent) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        guard var data = try? encoder.encode(event) else { return }
        data.append(0x0A)
        data.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                // Started by hand, with no pipe: say it where a person reads.
                if n < 0 && errno == EBADF, event.kind == .failed {
                    FileHandle.standardError.write(Data("layerctl: \(event.location.map { $0 + ": " } ?? "")\(event.message ?? "")\n".utf8))
                }
                if n <= 0 { return }  // the parent is gone; it will not read anything more
                offset += n
            }
        }
    }

    func send(_ kind: BuildEvent.Kind, _ message: String? = nil) {
        send(BuildEvent(kind, layer: layer, message: message))
    }
}
