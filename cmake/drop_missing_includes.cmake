# ROS 2 from PyPI wheels: the wheels' exported targets name include folders of the machine that
# built them (/opt/python/...). Drop folders that do not exist here; on a normal ROS install
# every folder exists and nothing changes.
function(uni_o4_drop_missing_includes)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_tgt ${_targets})
    get_target_property(_dirs ${_tgt} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      set(_kept "")
      foreach(_d ${_dirs})
        if(EXISTS "${_d}" OR _d MATCHES "^\\$<")
          list(APPEND _kept "${_d}")
        endif()
      endforeach()
      set_target_properties(${_tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endfunction()
uni_o4_drop_missing_includes()
