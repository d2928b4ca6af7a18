import Foundation
import Glibc
import LayerBuilder
import LayerSupport

/// Prints build events: a redrawn status line on a terminal, plain lines otherwise, or JSON lines.
final class BuildReporter {
    let json: Bool
    let terminal: Bool
    private let statusLine = StatusLine()

    init(json: Bool) {
        self.json = json
        terminal = !json && isatty(STDERR_FILENO) == 1
    }

    func report(_ event: BuildEvent) {
        if json {
            if let line = try? JSONOutput.line(event) { print(line) }
            return
        }
        switch event.kind {
        case .downloadProgress, .progress:
            if terminal && event.file != nil { status(event) }
        case .downloadStarted, .downloadDone:
            if terminal { status(event) }
        case .resolved:
            line("\(event.layer): \(event.message ?? "")")
        case .cached:
            line("\(event.layer): cached \(short(event.key))")
        case .building:
            line("\(event.layer): building \(short(event.key))")
        case .built:
            line("\(event.layer): built \(short(event.key)) in \(String(format: "%.2f", event.seconds ?? 0)) s")
        case .step:
            line("\(event.layer): \(event.message ?? "")")
        case .package:
            line("\(event.layer): \(event.message ?? "")")
        case .hook:
            // pacman's "(1/2) Description" for each hook the transaction triggered.
            let place = event.current.flatMap { current in event.total.map { " (\(current)/\($0))" } } ?? ""
            line("\(event.layer): \(event.message ?? "")\(place)")
        case .output:
            // Escaped, a line of zeros is four times as long: no longer than its 4 KiB on screen.
            show("\(event.layer) | " + Self.clipped(RawPath.printableLine(event.message ?? ""), to: 4096))
        case .warning:
            line("\(event.layer): warning: \(event.message ?? "")")
        case .error, .failed:
            line("\(event.layer): error: \(event.message ?? "")")
        case .finished, .mountPoints:  // the builder child's words to the parent
            break
        }
    }

    func finish(_ built: [BuiltLayer]) {
        statusLine.clear()
        if json {
            struct Summary: Encodable {
                var layers: [BuiltLayer]
                /// Where the CPU time went: layerctl's own process (its scan, hashing and
                /// normalising of each new tree), and each kind of child it started ("build": a
                /// layer's transaction and steps; "packages": refresh, resolutions, downloads).
                var cpuSeconds: [String: Double]
            }
            let cpu = CPUTime.byWork.merging(["layerctl": CPUTime.own]) { $1 }
            if let line = try? JSONOutput.line(Summary(layers: built, cpuSeconds: cpu)) { print(line) }
        } else if let top = built.last {
            let fresh = built.filter { !$0.cached }.count
            print("\(top.name) \(top.key) (\(fresh) built, \(built.count - fresh) cached)")
        }
    }

    private func short(_ key: String?) -> String { String((key ?? "").prefix(12)) }

    /// One line on stderr. A `run:` step's or a scriptlet's output, a package's name and a mirror's
    /// file name are a layer author's or a repository's words: no escape sequence of theirs reaches
    /// the terminal (or a log that is read in one later).
    private func line(_ text: String) { show(RawPath.printableLine(text)) }

    /// One line on stderr, escaped already.
    private func show(_ escaped: String) {
        statusLine.clear()
        FileHandle.standardError.write(Data((escaped + "\n").utf8))
    }

    /// `text` in at most `bytes` bytes of UTF-8, ending with "…" (3 bytes) when that is not all
    /// of it; cut where a character starts, never inside one.
    static func clipped(_ text: String, to bytes: Int) -> String {
        let utf8 = text.utf8
        guard utf8.count > bytes else { return text }
        var end = utf8.index(utf8.startIndex, offsetBy: bytes - 3)
        while end > utf8.startIndex && utf8[end] & 0xC0 == 0x80 { end = utf8.index(before: end) }
        return String(decoding: utf8[..<end], as: UTF8.self) + "…"
    }

    /// One line, redrawn in place: `layer: install perl [#####-----] 50%` or a download's bytes.
    private func status(_ event: BuildEvent) {
        var text = "\(event.layer): "
        switch event.kind {
        case .downloadProgress:
            let done = event.current ?? 0, total = max(event.total ?? 0, 1)
            text += "downloading \(event.file ?? "") " + StatusLine.bar(Double(done) / Double(total)) + " \(done / 1024) KiB"
        case .progress:
            text += "\(event.message ?? "") \(event.file ?? "") " + StatusLine.bar(Double(event.percent ?? 0) / 100)
                + " (\(event.current ?? 0)/\(event.total ?? 0))"
        case .downloadStarted:
            text += "downloading \(event.file ?? "")"
        default:
            text += "downloaded \(event.file ?? "")"
        }
        statusLine.show(text)
    }
}
