import Foundation

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org): the time a reproducible build stamps on what it
/// makes, in seconds since 1970.
package enum SourceDateEpoch {
    /// The latest time squashfs can hold (its mtimes are unsigned 32-bit seconds).
    package static let latest: Int64 = Int64(UInt32.max)

    /// The environment's value; nil when it is unset or empty. A value that is no whole number of
    /// seconds from 0 to `latest` is refused, as the specification asks, rather than passed over
    /// (`abc` built with the layer's own epoch) or taken (`-5` made every time in an image 2106).
    package static func fromEnvironment() throws -> Int64? {
        guard let text = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], !text.isEmpty else { return nil }
        guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), text.utf8.count <= 10,
            let seconds = Int64(text), seconds <= latest
        else { throw Malformed(text: text) }
        return seconds
    }

    package struct Malformed: LayerError {
        let text: String
        package var message: String {
            "SOURCE_DATE_EPOCH is \(quote(clip(text, to: 40))): it must be a whole number of seconds since 1970, "
                + "from 0 to \(latest) (or unset)"
        }
        package var code: ErrorCode { .input }
    }
}
