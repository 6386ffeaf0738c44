package dev.loramerge.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.File;
import java.io.IOException;
import java.io.StringWriter;
import java.lang.module.FindException;
import java.lang.module.ModuleDescriptor;
import java.lang.module.ModuleFinder;
import java.lang.module.ModuleReference;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.stream.Collectors;
import javax.tools.JavaCompiler;
import javax.tools.StandardJavaFileManager;
import javax.tools.StandardLocation;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The module boundaries of issue 23: an application on the module path sees the library's API and
 * none of its {@code internal} packages, which are exported only, by qualified exports, to the
 * loramerge modules that use them. Compiles small consumer modules with javac against the built
 * modules (this module's test class path, read as a module path), and reads the descriptors.
 *
 * <p>The tests themselves run on the class path (surefire's {@code useModulePath} is off), where
 * descriptors are not read; this is the check that they hold for users of the module path.
 */
class ModuleBoundaryTest {
  /** The library's modules, and the loramerge modules each internal package may be exported to. */
  private static final Map<String, Set<String>> ALLOWED =
      Map.of(
          "dev.loramerge.internal.fuse", Set.of("dev.loramerge.io", "dev.loramerge.bench"),
          "dev.loramerge.internal.json", Set.of("dev.loramerge.io", "dev.loramerge.bench"),
          "dev.loramerge.internal.linalg", Set.of("dev.loramerge.bench"),
          "dev.loramerge.internal.numeric", Set.of("dev.loramerge.algorithms"),
          "dev.loramerge.internal.select", Set.of("dev.loramerge.algorithms", "dev.loramerge.bench"),
          "dev.loramerge.internal.arch", Set.of(),
          "dev.loramerge.algorithms.internal", Set.of("dev.loramerge.bench"));

  private static final List<String> LIBRARY = List.of("dev.loramerge.core", "dev.loramerge.io", "dev.loramerge.algorithms");

  private static List<Path> modulePath;
  private static Map<String, ModuleDescriptor> library;

  @BeforeAll
  static void findModules() {
    // Every entry of the test class path that is a module (a jar, or a folder with a
    // module-info.class), one per name: the built library modules and their dependencies. Folders
    // without a descriptor (test classes) and jars with no valid module name are left out.
    String classPath = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
    modulePath = new ArrayList<>();
    library = new TreeMap<>();
    Set<String> names = new HashSet<>();
    for (String entry : classPath.split(File.pathSeparator)) {
      Path path = Path.of(entry);
      boolean candidate =
          Files.isRegularFile(path) && entry.endsWith(".jar") || Files.isRegularFile(path.resolve("module-info.class"));
      if (!candidate) {
        continue;
      }
      ModuleDescriptor descriptor;
      try {
        descriptor = ModuleFinder.of(path).findAll().stream().map(ModuleReference::descriptor).findFirst().orElse(null);
      } catch (FindException e) {
        continue;
      }
      if (descriptor != null && names.add(descriptor.name())) {
        modulePath.add(path);
        if (LIBRARY.contains(descriptor.name())) {
          library.put(descriptor.name(), descriptor);
        }
      }
    }
    assertThat(library).as("the library modules on the test class path, from %s", classPath).containsOnlyKeys(LIBRARY);
  }

  @Test
  void theLibraryModulesAreExplicitModules() {
    for (ModuleDescriptor descriptor : library.values()) {
      assertThat(descriptor.isAutomatic()).as("%s has a module-info", descriptor.name()).isFalse();
      assertThat(descriptor.isOpen()).as("%s is not open", descriptor.name()).isFalse();
    }
  }

  @Test
  void internalPackagesAreExportedOnlyToTheModulesThatUseThem() {
    Set<String> internals = new HashSet<>();
    for (ModuleDescriptor descriptor : library.values()) {
      assertThat(descriptor.opens()).as("%s opens nothing", descriptor.name()).isEmpty();
      for (String pkg : descriptor.packages()) {
        if (!pkg.contains(".internal")) {
          continue;
        }
        internals.add(pkg);
        assertThat(ALLOWED).as("internal package %s of %s", pkg, descriptor.name()).containsKey(pkg);
        for (ModuleDescriptor.Exports export : descriptor.exports()) {
          if (export.source().equals(pkg)) {
            assertThat(export.isQualified()).as("%s exported to every module", pkg).isTrue();
            assertThat(ALLOWED.get(pkg)).as("the modules %s is exported to", pkg).containsAll(export.targets());
          }
        }
      }
    }
    assertThat(internals).as("the internal packages").isEqualTo(ALLOWED.keySet());
  }

  @Test
  void anApplicationModuleCompilesAgainstTheApi(@TempDir Path folder) throws IOException {
    String diagnostics =
        compile(
            folder,
            "app",
            "requires dev.loramerge.io; requires dev.loramerge.algorithms;",
            "import dev.loramerge.LoraAdapter; import dev.loramerge.algorithms.MergeMethod; import dev.loramerge.io.LoraFiles;"
                + " import dev.loramerge.merge.LoraMerger;",
            "LoraAdapter adapter; MergeMethod method; LoraFiles files; LoraMerger merger;");
    assertThat(diagnostics).as("javac's messages").isEqualTo("");
  }

  @ParameterizedTest
  @CsvSource({
    "dev.loramerge.internal.fuse, Fusion",
    "dev.loramerge.internal.json, Json",
    "dev.loramerge.internal.linalg, Randoms",
    "dev.loramerge.internal.numeric, FloatFormats",
    "dev.loramerge.internal.select, MagnitudeSelect",
    "dev.loramerge.internal.arch, Descriptor",
    "dev.loramerge.algorithms.internal, TaskTensors",
  })
  void anApplicationModuleCannotUseAnInternalPackage(String pkg, String type, @TempDir Path folder) throws IOException {
    String diagnostics =
        compile(folder, "app", "requires dev.loramerge.io; requires dev.loramerge.algorithms;", "import " + pkg + "." + type + ";", type + " field;");
    assertThat(diagnostics).as("javac's messages").contains("package " + pkg + " is not visible").contains("does not export it");
  }

  @Test
  void lorabenchAloneSeesTaskTensors(@TempDir Path folder) throws IOException {
    // A module of lora-bench's name is the one the qualified export names (lora-bench's own
    // build compiles against it too).
    String diagnostics =
        compile(
            folder,
            "dev.loramerge.bench",
            "requires dev.loramerge.algorithms;",
            "import dev.loramerge.algorithms.internal.TaskTensors; import dev.loramerge.internal.select.MagnitudeSelect;",
            "TaskTensors tensors; MagnitudeSelect select;");
    assertThat(diagnostics).as("javac's messages").isEqualTo("");
  }

  /** Compiles a module of one class; returns javac's messages (empty when it compiled). */
  private static String compile(Path folder, String module, String requires, String imports, String body) throws IOException {
    Path sources = Files.createDirectories(folder.resolve("src"));
    Path classes = Files.createDirectories(folder.resolve("classes"));
    Path moduleInfo = Files.writeString(sources.resolve("module-info.java"), "module " + module + " { " + requires + " }\n");
    Path pkg = Files.createDirectories(sources.resolve("consumer"));
    Path use = Files.writeString(pkg.resolve("Use.java"), "package consumer;\n" + imports + "\nclass Use { " + body + " }\n");
    JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
    StringWriter messages = new StringWriter();
    try (StandardJavaFileManager files = javac.getStandardFileManager(null, null, null)) {
      // Nothing on the class path: javac's default is this JVM's, where everything is visible.
      files.setLocationFromPaths(StandardLocation.CLASS_PATH, List.of());
      List<String> options =
          List.of(
              "--module-path",
              modulePath.stream().map(Path::toString).collect(Collectors.joining(File.pathSeparator)),
              "-d",
              classes.toString(),
              "-proc:none",
              "-Xlint:none");
      Boolean compiled = javac.getTask(messages, files, null, options, null, files.getJavaFileObjects(moduleInfo, use)).call();
      assertThat(compiled).as("javac's verdict, given %s", messages).isEqualTo(messages.toString().isEmpty());
    }
    return messages.toString();
  }
}
