/// A boot-side failure in words: staging, choosing the default boot, a VM, reading this boot's changes.
public struct BootError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
