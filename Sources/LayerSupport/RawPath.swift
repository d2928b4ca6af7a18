import Foundation

/// Raw byte paths for system calls.
package enum RawPath {
    package static func with<T>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try (path + [0]).withUnsafeBufferPointer { buffer in
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }

    package static func string(_ path: [UInt8]) -> String { String(decoding: path, as: UTF8.self) }

    /// The bytes as text for a message or a terminal: UTF-8 as it is, any other byte, control
    /// characters (C0, DEL, C1) and the marks that reorder text (bidirectional overrides,
    /// embeddings, isolates and marks) as `\xNN`, and then backslashes too, so two names that
    /// differ only in such bytes read differently, no name starts a line of its own or shows its
    /// characters in another order (`\u{202E}txt.exe` reads "exe.txt" on a terminal that lays
    /// out bidirectional text), and no escape sequence reaches the terminal. Names come from
    /// layers, and a layer may be a stranger's.
    package static func display(_ bytes: [UInt8]) -> String {
        // C1 characters (U+0080 to U+009F) are 0xC2 0x80 to 0xC2 0x9F in UTF-8.
        let hasC1 = zip(bytes, bytes.dropFirst()).contains { $0 == 0xC2 && (0x80...0x9F).contains($1) }
        if !hasC1, let text = String(validating: bytes, as: UTF8.self), !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }),
            !text.unicodeScalars.contains(where: reordersText)
        {
            return text
        }
        var result = ""
        var rest = bytes[...]
        while let byte = rest.first {
            // The longest valid UTF-8 sequence at the front, up to 4 bytes.
            if byte >= 0x80, !(byte == 0xC2 && rest.count > 1 && (0x80...0x9F).contains(rest[rest.startIndex + 1])),
                let length = (2...4).first(where: {
                    rest.count >= $0 && String(validating: rest.prefix($0), as: UTF8.self) != nil
                }),
                !String(decoding: rest.prefix(length), as: UTF8.self).unicodeScalars.contains(where: reordersText)
            {
                result += String(decoding: rest.prefix(length), as: UTF8.self)
                rest = rest.dropFirst(length)
            } else if byte < 0x20 || byte >= 0x7F || byte == UInt8(ascii: "\\") {
                result += "\\x" + String(byte, radix: 16, uppercase: false).leftPadded(2)
                rest = rest.dropFirst()
            } else {
                result.unicodeScalars.append(UnicodeScalar(byte))
                rest = rest.dropFirst()
            }
        }
        return result
    }

    /// The characters of Unicode's bidirectional algorithm that change the order in which the
    /// text around them is shown: the marks (LRM, RLM, ALM), embeddings and overrides (U+202A to
    /// U+202E) and isolates (U+2066 to U+2069).
    private static func reordersText(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// Text for a terminal, by `display`'s rule: as it is, unless it holds a control character.
    package static func printable(_ text: String) -> String { display(Array(text.utf8)) }

    /// A line of a command's output for a terminal or a log: `printable`, but a tab stays a tab
    /// (it moves the cursor right and no more) and a line's trailing carriage return (CRLF) is
    /// dropped. Any other carriage return is escaped, since a line could hide its start behind it.
    package static func printableLine(_ text: String) -> String {
        var bytes = Array(text.utf8)
        if bytes.last == 0x0D { bytes.removeLast() }
        return bytes.split(separator: 0x09, omittingEmptySubsequences: false).map { display(Array($0)) }
            .joined(separator: "\t")
    }

    private enum BytesKey: String, CodingKey { case pathBase64 }

    /// Adds `pathBase64`, the path's bytes in base64, to the keyed container of `encoder`, when
    /// they are not UTF-8: JSON holds text, and the path's text there has U+FFFD for them.
    package static func encodeBytesUnlessText(_ bytes: [UInt8], to encoder: any Encoder) throws {
        guard !bytes.isEmpty, String(validating: bytes, as: UTF8.self) == nil else { return }
        var container = encoder.container(keyedBy: BytesKey.self)
        try container.encode(Data(bytes).base64EncodedString(), forKey: .pathBase64)
    }

    package static func join(_ directory: [UInt8], _ name: [UInt8]) -> [UInt8] {
        var path = directory
        path.append(UInt8(ascii: "/"))
        path.append(contentsOf: name)
        return path
    }
}

extension String {
    /// The string with zeros in front up to `width` characters.
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
