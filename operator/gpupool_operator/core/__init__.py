"""The pure decision core: plain data in, decisions out; no I/O, no clock, no randomness.

Placement, as the operator calls it::

    from gpupool_operator.core.inventory import Snapshot        # built by adapters.inventory
    from gpupool_operator.core.demand import Demand, from_pool  # InferencePool -> per-model demand
    from gpupool_operator.core.solver import Options, Planner, solve
    from gpupool_operator.core.plan import Plan, actions         # the result, and plan - observed

    plan = solve(snapshot, [d for pool in pools for d in from_pool(pool)], Options(move_penalty=0.5))
    problems(snapshot, demands, plan) == []                      # core.verify: independent check

Modules: ``catalog`` (GPU products and MIG profiles as data), ``mig`` (layout geometry, enumeration,
smallest change), ``cost`` (prices), ``inventory`` (snapshot types), ``demand`` (demand model and
its shapes), ``state`` (the solver's indexed working copy), ``solver`` (the heuristic),
``exact`` (HiGHS MILP reference, tests and benchmarks only), ``baselines`` (whole-GPU first-fit and
spread), ``plan`` (plan, actions, mig-parted config), ``verify`` (plan checker).
"""
