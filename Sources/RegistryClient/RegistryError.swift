import LayerSupport

/// A registry refused, failed or sent what cannot be: one line naming the registry, the
/// repository and the blob or manifest. Credentials never appear in it.
public struct RegistryError: LayerError {
    public let code: ErrorCode
    public let message: String
    public let cause: (any Error)?

    public init(_ code: ErrorCode, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }
}
