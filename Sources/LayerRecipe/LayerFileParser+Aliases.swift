import CYaml

/// A layer file may not use YAML aliases (`*name`). Yams composes a document by sharing an
/// anchored node wherever it is aliased, and checks a mapping's keys for duplicates by hashing
/// them whole: an "alias bomb" (each level a list of aliases of the one before) used as a key is
/// hashed as billions of nodes and runs for minutes. libyaml's event parser, which Yams is built
/// on (its CYaml module), reads the file once without expanding anything, so the first alias is
/// found before anything is composed.
extension LayerFileParser {
    /// Where the first alias is, or nil; a file libyaml cannot parse gives nil, and composing it
    /// then reports the YAML error.
    func firstAlias() -> FileLocation? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBufferPointer { buffer -> FileLocation? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var event = yaml_event_t()
            while yaml_parser_parse(&parser, &event) == 1 {
                defer { yaml_event_delete(&event) }
                if event.type == YAML_ALIAS_EVENT {
                    return FileLocation(
                        file: path, line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
                }
                if event.type == YAML_STREAM_END_EVENT { return nil }
            }
            return nil
        }
    }
}
