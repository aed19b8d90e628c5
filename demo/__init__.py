"""`featdistill demo`: the whole product on one machine (demo.cli, demo.report), and the labelled
images it judges (demo.images). It may use detector, train and shell; the worker it runs as a
subprocess and talks to through Kafka only, so nothing imports worker.
"""
