"""The worker's adapters to the outside world, one module per system, each implementing a port of
worker.ports: Kafka (kafka_io, with kafka_security and kafka_probe), Redis (redis_cache), image
fetching (fetch), replay sources (replay_sources). The pipeline core never imports them; the edge
(worker.main, worker.replay) builds them from the settings and hands them to the pipeline.
"""
