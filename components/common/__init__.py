"""What several stages share: file I/O, run folders, records, drawing images, dtypes and the stage declaration."""
