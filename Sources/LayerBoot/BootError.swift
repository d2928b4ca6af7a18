import LayerSupport

/// A boot-side failure in words: staging, choosing the default boot, a VM, reading this boot's changes.
public struct BootError: LayerError {
    public let code: ErrorCode
    public let message: String
    public init(_ message: String, code: ErrorCode = .input) {
        self.code = code
        self.message = message
    }
}
