import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plgapp.settings")

application = get_wsgi_application()

# Everything loaded so far (Django, the apps, the URLconf and their imports, among them scikit-learn, SciPy and
# pandas: ~220k objects) lives as long as the worker. Left in the collector's oldest generation, each full
# collection walks all of it — ~100-170 ms on this project's 2-core machine, paid by whichever request happens to
# trigger it (the PQL list benchmark's p95, docs/benchmarks.md). Frozen, the collector skips it.
get_resolver().url_patterns  # noqa: B018 - import the views now, so they are frozen too
gc.freeze()
# Requests still build many containers (a batch of 100 events parses into thousands), nearly all freed by reference
# counting. At the default thresholds (700, 10, 10) 200 ingestion requests ran ~300 young, 27 middle and 2 full
# collections, each walking what was alive; at these, almost none: 2-5% less CPU per request (paired
# in-process runs, docs/benchmarks.md). What cyclic garbage there is waits a little longer.
gc.set_threshold(50_000, 50, 100)
