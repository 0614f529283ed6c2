"""Input and output at the edges: DICOM, video, frame grabbers, transport, storage."""
