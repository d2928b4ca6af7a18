/// Lines of output, clipped as a command's output is (`CommandRunner`): the first
/// `CommandRunner.mostOutput` bytes pass, then only the last `CommandRunner.keptTail` bytes of
/// whole lines are kept, to go on at the end after a line that says what was left out. For
/// output that comes in lines already: package scriptlets and hooks, which libalpm reads.
struct LineClip {
    private var passed = 0
    /// The kept lines are `tail[tailStart...]`: dropping one from the front moves nothing.
    private var tail: [String] = []
    private var tailStart = 0
    private var tailBytes = 0
    private var dropped = 0

    /// The lines to pass on now for `line`: itself, or none once the start is used up.
    mutating func take(_ line: String) -> [String] {
        let size = line.utf8.count + 1
        if passed < CommandRunner.mostOutput {
            passed += size
            return [line]
        }
        tail.append(line)
        tailBytes += size
        while tailBytes > CommandRunner.keptTail {
            let first = tail[tailStart].utf8.count + 1
            tailStart += 1
            tailBytes -= first
            dropped += first
        }
        if tailStart > 4096 && tailStart * 2 > tail.count {
            tail.removeFirst(tailStart)
            tailStart = 0
        }
        return []
    }

    /// The lines kept for the end, after the line that says what was left out; and a fresh start
    /// for the output that follows.
    mutating func finish() -> [String] {
        defer { self = LineClip() }
        let kept = Array(tail[tailStart...])
        guard dropped > 0 else { return kept }
        return [CommandRunner.clipNote(dropped: dropped)] + kept
    }
}
