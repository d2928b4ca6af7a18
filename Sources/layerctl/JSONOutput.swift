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
        String(decoding: escapingControls(try encoder.encode(value)), as: UTF8.self)
    }

    /// `json` with DEL and the C1 controls (U+0080–U+009F) written as `\u` escapes. JSON needs no
    /// escape for them, so the encoder writes them as they are, but a terminal that shows the
    /// output acts on them (a C1 CSI is an escape sequence in one character), and the text of a
    /// step's output or a file name is a stranger's. Escaped, they mean the same to every reader.
    /// They can only be in strings: all else in JSON is printable ASCII.
    static func escapingControls(_ json: Data) -> Data {
        json.withUnsafeBytes { bytes in
            func isControl(_ index: Int) -> Bool {
                bytes[index] == 0x7F || (bytes[index] == 0xC2 && index + 1 < bytes.count && (0x80...0x9F).contains(bytes[index + 1]))
            }
            guard let first = bytes.indices.first(where: isControl) else { return json }
            var escaped = Data(bytes[..<first])
            var index = first
            while index < bytes.count {
                guard isControl(index) else {
                    escaped.append(bytes[index])
                    index += 1
                    continue
                }
                let scalar = bytes[index] == 0x7F ? 0x7F : bytes[index + 1]
                escaped.append(contentsOf: Array(String(format: "\\u%04x", scalar).utf8))
                index += bytes[index] == 0x7F ? 1 : 2
            }
            return escaped
        }
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
