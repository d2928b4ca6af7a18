/// A build that cannot go on, in one sentence that names the layer file line, package or path.
public struct BuildFailure: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
