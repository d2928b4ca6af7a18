import Foundation

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org): the time a reproducible build stamps on what it
/// makes, in seconds since 1970.
package enum SourceDateEpoch {
    /// The environment's value, when it is set to a number.
    package static var fromEnvironment: Int64? {
        ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"].flatMap(Int64.init)
    }
}
