import Foundation
import LayerSupport

/// The one style of every `--json`: each document on one line, keys sorted, dates in ISO 8601,
/// slashes unescaped, sizes in bytes. `build --json` prints a document per event and a summary;
/// every other command prints one document. The README lists each command's.
enum JSONOutput {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }()

    /// `value` as one line of JSON.
    static func line<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Prints `value` as one line of JSON on stdout.
    static func print<T: Encodable>(_ value: T) throws {
        Swift.print(try line(value))
    }

    /// What a command with `--json` prints on stdout when it fails, besides the line on stderr:
    /// `{"error":{"code":…,"exitStatus":…,"message":…}}`.
    struct Failure: Encodable {
        struct Body: Encodable {
            var code: ErrorCode
            var exitStatus: Int32
            var message: String
        }
        var error: Body
    }
}

/// A command that has `--json`.
protocol JSONCommand {
    var json: Bool { get }
}
