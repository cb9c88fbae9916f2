using Microsoft.Extensions.AI;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Chat;

// The namespace of the container itself, as Microsoft.Extensions.* registration helpers do, so the helper is found
// where services are configured without another using.
namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registering a steered model and its <see cref="IChatClient"/> in a dependency-injection container.</summary>
public static class SteeredChatServiceCollectionExtensions
{
    /// <summary>Registers the model folder <paramref name="modelDirectory"/> as a singleton <see cref="SteeredModel"/>
    /// (loaded on first use) and a singleton <see cref="IChatClient"/> over it. The container disposes the model when it is
    /// disposed (host shutdown): requests still generating are cancelled and waited for first, so shutting down under load
    /// is safe; they end with <see cref="ObjectDisposedException"/>.</summary>
    /// <param name="services">The service collection.</param>
    /// <param name="modelDirectory">A model folder (patched to steer; an unpatched one generates without steering).</param>
    /// <param name="runtimeOptions">Execution provider, threads, model file.</param>
    /// <param name="defaults">Generation settings where a request's ChatOptions are silent.</param>
    /// <returns><paramref name="services"/>, for chaining.</returns>
    public static IServiceCollection AddSteeredChatClient(this IServiceCollection services, string modelDirectory,
        RuntimeOptions? runtimeOptions = null, GeneratorOptions? defaults = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(modelDirectory);
        services.AddSingleton(_ => SteeredModel.Load(modelDirectory, runtimeOptions));
        // The client does not own the model: the container disposes both, each once.
        services.AddSingleton<IChatClient>(sp => new SteeredChatClient(sp.GetRequiredService<SteeredModel>(), defaults));
        return services;
    }
}
