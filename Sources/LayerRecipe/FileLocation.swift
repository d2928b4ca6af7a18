import LayerSupport

/// A place in a layer file, for errors: `file:line:column`, both counted from 1.
public struct FileLocation: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// Control characters in the file's name are escaped, so an error stays one line.
    public var description: String {
        let name = file.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F } ? RawPath.display(Array(file.utf8)) : file
        return "\(name):\(line):\(column)"
    }
}

/// A value read from a layer file, with where it was written.
public struct Located<Value: Sendable & Hashable>: Hashable, Sendable {
    public var value: Value
    public var location: FileLocation

    public init(_ value: Value, at location: FileLocation) {
        self.value = value
        self.location = location
    }
}

/// A layer file that cannot be used, with the place that makes it so.
public struct LayerFileError: LayerError, Equatable {
    public var location: FileLocation
    public var message: String

    public init(_ message: String, at location: FileLocation) {
        self.location = location
        self.message = message
    }

    public var code: ErrorCode { .input }
    public var description: String { "\(location): \(message)" }
}
