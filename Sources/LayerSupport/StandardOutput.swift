import CLayerSupport

/// The process's stdout.
package enum StandardOutput {
    /// Sends each line out when it is printed, into a pipe or a file too, where C's default is a
    /// buffer's worth at a time: a program reading `build --json` gets each event as it happens.
    package static func lineBuffered() { lc_line_buffer_stdout() }
}
