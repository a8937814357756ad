"""The names of the user attributes a trial carries in the storage, in one place.

Every module that writes or reads a trial's attributes (the objective, the trial loop, the proxy, warm
starts, export, retrain, report, preview, optuna-dashboard's readers) uses these names, so a rename is
one edit and a typo is an import error rather than a silently missing value.
"""

POLICY = "policy"  # Policy.describe(): the policy as readable text
POLICY_JSON = "policy_json"  # Policy.to_dict(): the policy as data (augsearch.policy.trial_policy reads it)
WARM_START = "warm_start"  # the baseline a trial was enqueued for (augsearch/warmstart.py)
REQUEUED_FROM = "requeued_from"  # the number of the interrupted trial whose parameters it runs again
PROXY_STDDEV = "proxy_t_stddev"  # the T. stddev proxy (augsearch/proxy.py)
PROXY_SECONDS = "proxy_seconds"
FAIL_REASON = "fail_reason"
PRUNED_REASON = "pruned_reason"
WALL_SECONDS = "wall_seconds"
IMAGES_PER_SECOND = "images_per_second"
TEACHER_PASSES = "teacher_passes"  # images the teacher's outputs were needed for in the trial's training
TEACHER_PASSES_SAVED = "teacher_passes_saved"  # of those, outputs reused from clean images (reuse.py)
WORKER = "worker"  # host:pid of the process that ran it
STRENGTH = "strength"  # mean augmentation strength per epoch, non-constant schedules only (control.py)
STRENGTH_REACHED = "strength_reached"  # the strength at the end of each epoch (a bound: clamped there)
SYNTHETIC_IMAGES = (
    "synthetic_images"  # of the images a trial trained on, how many were synthetic (synthesis.py)
)
TRAINED_IMAGES = "trained_images"  # every image a trial trained on, real and synthetic (with synthesis only)
