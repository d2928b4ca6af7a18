/// Raw byte paths for system calls.
package enum RawPath {
    package static func with<T>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try (path + [0]).withUnsafeBufferPointer { buffer in
            try buffer.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }

    package static func string(_ path: [UInt8]) -> String { String(decoding: path, as: UTF8.self) }

    /// The bytes as text for a message: UTF-8 as it is, any other byte and control characters as
    /// `\xNN`, so two names that differ only in such bytes read differently.
    package static func display(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self), !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            return text
        }
        var result = ""
        var rest = bytes[...]
        while let byte = rest.first {
            // The longest valid UTF-8 sequence at the front, up to 4 bytes.
            if byte >= 0x80,
                let length = (2...4).first(where: {
                    rest.count >= $0 && String(validating: rest.prefix($0), as: UTF8.self) != nil
                })
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

    /// Text for a terminal: as it is, unless it holds a control character (C0, DEL or C1: a
    /// newline would start a line of its own, an escape sequence would drive the terminal), and
    /// then with each of those and each backslash as `\xNN`. Names and package fields come from
    /// layers, and a layer may be a stranger's.
    package static func printable(_ text: String) -> String {
        func isControl(_ scalar: Unicode.Scalar) -> Bool { scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) }
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            if isControl(scalar) || scalar == "\\" {
                result += "\\x" + String(scalar.value, radix: 16, uppercase: false).leftPadded(2)
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
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
