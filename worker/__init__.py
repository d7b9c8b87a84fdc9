"""The binlog listener process: stream, batching, checkpoint, leader lock."""
