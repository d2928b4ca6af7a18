import Foundation
import LayerSupport

/// One line on stderr that is redrawn in place: the progress of a build or an export on a terminal.
final class StatusLine {
    static let width = 100
    private var shown = false
    private var last = ""

    /// Draws `text`, control characters escaped, clipped or padded to the width, over the previous
    /// line. A text equal to the one shown is not drawn again: libalpm and the writer report far
    /// more often than the line changes.
    func show(_ text: String) {
        let text = RawPath.printable(text)
        let line =
            text.count > Self.width
            ? String(text.prefix(Self.width))
            : text.padding(toLength: Self.width, withPad: " ", startingAt: 0)
        if shown && line == last { return }
        last = line
        FileHandle.standardError.write(Data(("\r" + line).utf8))
        shown = true
    }

    /// Blanks the line, so ordinary output can follow.
    func clear() {
        guard shown else { return }
        FileHandle.standardError.write(Data(("\r" + String(repeating: " ", count: Self.width) + "\r").utf8))
        shown = false
    }

    /// `[#####---------------]` for a fraction from 0 to 1.
    static func bar(_ fraction: Double) -> String {
        let filled = Int((min(max(fraction, 0), 1) * 20).rounded())
        return "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 20 - filled) + "]"
    }
}
