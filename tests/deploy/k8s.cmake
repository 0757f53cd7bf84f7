# Kubernetes manifests (k8s/): tests/deploy/k8s_test.py through k8s_run, which
# uses kubectl from PATH (scripts/install-deps installs Debian's
# kubernetes-client where there is none) and the .venv/ Python with the pinned
# packages of ../python-requirements.txt. Exit 77 = skipped: no kubectl at all, or
# (deploy_k8s_run_*) no binaries or default model.
#   deploy_k8s_render_<overlay>  kubectl kustomize; Kubernetes schemas (strict, oldest and newest
#                                supported version) and k8s_schemas/ for prometheus-operator
#                                objects; structural checks (probes, resources, security
#                                context, ports, names, drain budget, PDB, HPA and its
#                                prometheus-adapter rules, NetworkPolicy)
#   deploy_k8s_rules             the PrometheusRule matches deploy/prometheus/rules/*.yml
#   deploy_k8s_run_<overlay>     polar-worker and polar-gateway started with the rendered
#                                arguments serve a completion and stop on SIGTERM in time
set(POLAR_K8S_RUN ${CMAKE_CURRENT_SOURCE_DIR}/k8s_run)
foreach(overlay gpu cpu-dev)
  add_test(NAME deploy_k8s_render_${overlay} COMMAND ${POLAR_K8S_RUN} render ${overlay})
  set_tests_properties(deploy_k8s_render_${overlay} PROPERTIES
    LABELS deploy SKIP_RETURN_CODE 77 TIMEOUT 120)
  if(TARGET polar-worker AND TARGET polar-gateway AND TARGET polar)
    add_test(NAME deploy_k8s_run_${overlay}
             COMMAND ${POLAR_K8S_RUN} run ${overlay}
                     --worker $<TARGET_FILE:polar-worker> --gateway $<TARGET_FILE:polar-gateway>
                     --polar $<TARGET_FILE:polar> --model ${POLAR_DEFAULT_MODEL})
    set_tests_properties(deploy_k8s_run_${overlay} PROPERTIES
      LABELS "deploy;model" SKIP_RETURN_CODE 77 TIMEOUT 600 ENVIRONMENT "OMP_WAIT_POLICY=passive")
  endif()
endforeach()
add_test(NAME deploy_k8s_rules COMMAND ${POLAR_K8S_RUN} rules)
set_tests_properties(deploy_k8s_rules PROPERTIES LABELS deploy SKIP_RETURN_CODE 77 TIMEOUT 120)
